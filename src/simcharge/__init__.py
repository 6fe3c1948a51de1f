"""simcharge: a self-hostable platform for a prepaid virtual-SIM (eSIM) operator."""

__version__ = "0.1.0"

"""Charging: rating, real-time charging (3GPP Nchf_ConvergedCharging v3) and batch usage."""

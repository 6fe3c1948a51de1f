"""Telling customers things: e-mail, SMS and notices in the portal, in their language."""

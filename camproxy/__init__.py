"""CamProxy: one camera link, many logged-in viewers."""

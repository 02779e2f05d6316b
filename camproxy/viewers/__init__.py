"""Viewers of a camera: WebSocket browsers and MJPEG clients, with newest-frame delivery.
They import only ``camproxy.hub``."""

"""Camera sources: one module or package per kind of camera, each behind the hub's
``ICameraSource``. They import only ``camproxy.hub``."""

"""The ``twistd camproxy`` plugin; the module named here is imported lazily."""

from twisted.application.service import ServiceMaker

camproxy = ServiceMaker(
    "CamProxy",
    "camproxy.tap",
    "Proxy one RoboCam/ESP32-CAM camera to many logged-in browser viewers.",
    "camproxy",
)

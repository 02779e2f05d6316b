# twistd -ny camproxy.tac
#
# Runs the same service as `twistd camproxy`, configured from the environment and
# from a .env file in the working directory (see the README's options table).
# CAMPROXY_DEMO=1 runs the built-in demo camera, as --demo does.
import sys

from twisted.application.service import Application
from twisted.internet import reactor
from twisted.logger import ILogObserver

from camproxy.config import ConfigError, build_config, read_environment
from camproxy.ops.logs import make_observer
from camproxy.tap import build_service

environment = read_environment()
try:
    config = build_config({"demo": environment.get("CAMPROXY_DEMO") == "1"}, environment)
except ConfigError as problem:
    sys.exit(f"camproxy: error: {problem}")

application = Application("camproxy")
application.setComponent(
    ILogObserver,
    make_observer(
        level=config.log_level, fmt=config.log_format, primary=sys.stdout, log_file=config.log_file
    ),
)
build_service(config, reactor).setServiceParent(application)

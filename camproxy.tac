# twistd -ny camproxy.tac
#
# Runs the same service as `twistd camproxy`, configured from the environment and
# from a .env file in the working directory (see the README's options table).
# CAMPROXY_DEMO=1 runs the built-in demo cameras, as --demo does.
from camproxy.tap import tac_application

application = tac_application()

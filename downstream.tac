# twistd -n -y downstream.tac — the same node as `twistd -n downstream`, configured only through
# DOWNSTREAM_* environment variables and DOWNSTREAM_CONFIG (a TOML file).
import sys

from twisted.application import service
from twisted.internet import reactor

from downstream_tx.config import load_config
from downstream_tx.tap import GIL_SWITCH_INTERVAL, config_or_exit, node_service_or_exit

sys.setswitchinterval(GIL_SWITCH_INTERVAL)
application = service.Application("downstream-tx")
node_service_or_exit(config_or_exit(load_config), reactor).setServiceParent(application)

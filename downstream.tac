# twistd -n -y downstream.tac — the same node as `twistd -n downstream`, configured only through
# DOWNSTREAM_* environment variables and DOWNSTREAM_CONFIG (a TOML file).
import sys

from twisted.application import service
from twisted.internet import reactor

from downstream_tx.config import load_config
from downstream_tx.tap import GIL_SWITCH_INTERVAL, config_or_exit, node_or_workers

sys.setswitchinterval(GIL_SWITCH_INTERVAL)
application = service.Application("downstream-tx")
# DOWNSTREAM_WORKERS=N: the workers are `twistd -n downstream`, configured by the same environment
node_or_workers(config_or_exit(load_config), reactor, ["-n", "--pidfile=", "downstream"]).setServiceParent(application)

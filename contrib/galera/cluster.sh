#!/bin/sh
# A throw-away 3-node MariaDB Galera cluster on loopback ports, for trying downstream-tx on Galera
# and for its tests: start DIR | status DIR | stop DIR | kill DIR N | stop-node DIR N | start-node DIR N.
# Needs root, galera-4, mariadb-server and rsync; see docs/operations.md ("Galera") and the
# implementation, tests/support/galera.py (standard library only).
exec python3 "$(dirname "$0")/../../tests/support/galera.py" "$@"

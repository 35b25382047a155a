#!/bin/sh
# A throw-away MariaDB Spider cluster on loopback ports (a Spider head and two backend servers), for
# trying downstream-tx's schema sharded by farmer: start DIR | shard DIR DATABASE | status DIR | stop DIR.
# Needs root, mariadb-server and mariadb-plugin-spider; see docs/capacity.md ("Write sharding: MariaDB
# Spider") and the implementation, tests/support/spider.py (standard library only).
exec python3 "$(dirname "$0")/../../tests/support/spider.py" "$@"

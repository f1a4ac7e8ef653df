#!/usr/bin/env bash
# A second, small Neo4j 5 for restore drills (docs/backups.md): the same install and
# launcher as neo4j.sh, its own data dir ($SIGHTOPS_STATE/neo4j-scratch), log, pidfile and
# lock, Bolt on 127.0.0.1:$NEO4J_SCRATCH_BOLT_PORT (7689), a small heap and page cache.
# Never started by default: `scripts/services/up.sh neo4j-scratch` (the backup tests'
# session fixture does this); `down.sh` stops it with the rest.
#   scripts/services/neo4j-scratch.sh install|start|stop|status
set -euo pipefail
export SIGHTOPS_NEO4J_SVC=neo4j-scratch
export NEO4J_BOLT_PORT="${NEO4J_SCRATCH_BOLT_PORT:-7689}"
export NEO4J_PAGECACHE_MB="${NEO4J_SCRATCH_PAGECACHE_MB:-16}"
export NEO4J_JAVA_OPTS="${NEO4J_SCRATCH_JAVA_OPTS:--Xms64m -Xmx320m -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
exec "$(dirname "${BASH_SOURCE[0]}")/neo4j.sh" "$@"

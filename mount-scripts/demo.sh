#!/usr/bin/env bash
# A primary and a backup on local directories with a generated secret: write into production/, watch dr-copy/ follow.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "--help" ]; then
  echo "usage: mount-scripts/demo.sh [DIR]   (default DIR: /tmp/drms-demo; run as root)"
  exit 0
fi
demo=${1:-/tmp/drms-demo}
cd "$root"
if ! { [ -x node_modules/.bin/tsc ] && command -v fusermount >/dev/null; }; then bash mount-scripts/install-deps.sh; fi
npm run build --silent
drms() { "$root/dist/cli/main.js" "$@"; }

mkdir -p "$demo"/{production,dr-copy,primary-state,backup-state}
[ -e "$demo/production/welcome.txt" ] || {
  echo "This file existed before drms was started." > "$demo/production/welcome.txt"
  mkdir -p "$demo/production/macros" && echo '&echo hello' > "$demo/production/macros/start.cm"
}
[ -e "$demo/secret" ] || drms keygen --out "$demo/secret"

pretty="$root/node_modules/.bin/pino-pretty"
drms backup --listen 127.0.0.1:7700 --target "$demo/dr-copy" --state "$demo/backup-state" --secret-file "$demo/secret" --admin 7702 \
  > >("$pretty" > "$demo/backup.log") 2>&1 &
backup=$!
sleep 0.5
drms primary --mount "$demo/production" --state "$demo/primary-state" --to 127.0.0.1:7700 --secret-file "$demo/secret" --admin 7701 \
  > >("$pretty" > "$demo/primary.log") 2>&1 &
primary=$!
stopped=0
stop() {
  [ "$stopped" = 1 ] && return
  stopped=1
  echo; echo "stopping: the primary unmounts and drains, then the backup stops"
  for pid in "$primary" "$backup"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap stop EXIT INT TERM
for _ in $(seq 50); do grep -q " $demo/production fuse.drms " /proc/mounts && break; sleep 0.1; done
drms sync --state "$demo/primary-state" --timeout 30

cat <<MSG

drms demo is running.
  production (mounted, mirrored):  $demo/production
  DR copy:                         $demo/dr-copy
  logs (pino-pretty):              $demo/primary.log  $demo/backup.log
  dashboards:                      http://127.0.0.1:7701/ (primary)  http://127.0.0.1:7702/ (backup)
  admin tokens:                    $demo/primary-state/admin.token  $demo/backup-state/admin.token

Try, in another shell:
  echo "card txn 1" >> $demo/production/txn.log
  ls -l $demo/dr-copy; cat $demo/dr-copy/txn.log
  $root/dist/cli/main.js status --state $demo/primary-state

Press Ctrl-C to stop.
MSG
while kill -0 "$primary" 2>/dev/null; do
  sleep 5
  drms status --state "$demo/primary-state" | grep -E 'connected|lag' | tr -s ' ' | paste -sd ' ' -
done

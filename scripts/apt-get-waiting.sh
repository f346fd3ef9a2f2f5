#!/usr/bin/env bash
# apt-get, waiting up to 10 minutes for the locks another apt holds (a machine's start-up upgrades, a second
# checkout's `make`) instead of failing at once. DPkg::Lock::Timeout waits for dpkg's lock only; `apt-get update`
# takes the package lists' lock, which it gives up on at once, so a refused lock is tried again here.
set -uo pipefail
for attempt in $(seq 1 60); do
  out=$(apt-get -o DPkg::Lock::Timeout=600 "$@" 2>&1)
  status=$?
  if [ "$status" -eq 0 ]; then
    [ -z "$out" ] || printf '%s\n' "$out"
    exit 0
  fi
  case "$out" in
    *"Could not get lock"*|*"Unable to acquire the dpkg frontend lock"*|*"Unable to lock directory"*)
      [ "$attempt" -eq 1 ] && echo "apt is busy (another apt holds its lock); waiting up to 10 minutes" >&2
      sleep 10 ;;
    *) printf '%s\n' "$out" >&2; exit "$status" ;;
  esac
done
echo "apt-get $*: another apt still held its lock after 10 minutes" >&2
exit 100

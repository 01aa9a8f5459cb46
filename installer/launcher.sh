#!/bin/sh
# The app's launcher: what the menu entry starts. POSIX sh, no other dependency.
#
# Installed by install.sh as <root>/desktop-shell, where <root> is the per-user install root
# (${XDG_DATA_HOME:-~/.local/share}/desktop-shell-app). It starts the shell the shell pointer
# (current.json) names, else its last known-good, else the installed shell, with the arguments
# it was given, and watches the start:
#
# - The shell writes the file named in DESKTOP_HEALTH_MARK once it is healthy (window up, or
#   command reached). A shell that exits before that has crashed at startup, unless it exited 0
#   or was stopped (SIGINT, SIGTERM, SIGHUP to it or to this launcher). Then the fallback is
#   started with the same arguments: the pointer's last known-good as it was when this launch
#   began, else the installed shell. The crash is blamed only once a fallback starts healthy in
#   the same environment: that shell records it (bad mark, pointer moved to itself) from the list
#   in DESKTOP_FAILED_SHELLS. If even the installed shell fails, nothing is marked: the cause is
#   this machine (no display, a missing library), not a release. The installed shell is never
#   blamed.
# - A healthy shell that exits with 85 asks for a restart ("Restart to update"): the pointer's
#   shell is started again.
# - SIGTERM and SIGHUP are forwarded to the shell. SIGINT is only noted: a terminal sends it to
#   the whole foreground process group, so the shell has it already.
#
# Everything else (which shell to stage, the bad list, the pointer) is the shells' business;
# this script only reads current.json and bad-versions.json, and writes nothing but health/.
set -u
umask 077

RESTART_CODE=85
MAX_STARTS=6

self=$0
while [ -L "$self" ]; do  # ~/.local/bin/desktop-shell may link here
  link=$(readlink "$self") || break
  case $link in
    /*) self=$link ;;
    *) self=$(dirname "$self")/$link ;;
  esac
done
root=$(cd "$(dirname "$self")" && pwd -P) || exit 1
self=$root/$(basename "$self")
health=$root/health
log=$health/launcher.log

say() { printf 'desktop-shell: %s\n' "$*" >&2; }
note() { printf '%s %s\n' "$(date '+%Y-%m-%dT%H:%M:%S')" "$*" >>"$log" 2>/dev/null; }

# A version may name a directory only if it looks like one: no "/", no "..", starts with a digit.
valid_version() {
  case $1 in
    '' | *[!0-9A-Za-z.+!_-]* | *..*) return 1 ;;
    [0-9]*) return 0 ;;
    *) return 1 ;;
  esac
}

# A string field of a JSON state file as the shells write it (indented, one key per line).
field() {
  if [ -f "$1" ] && [ ! -L "$1" ]; then
    sed -n "s/^ *\"$2\": *\"\\([^\"]*\\)\".*/\\1/p" "$1" 2>/dev/null | sed -n 1p
  fi
}

is_bad() {
  [ -f "$root/bad-versions.json" ] && grep -F -q "\"$1\": {" "$root/bad-versions.json" 2>/dev/null
}

executable_of() {
  exe=$(field "$root/shells/$1/_internal/build-info.json" executable)
  case $exe in
    '' | *[!A-Za-z0-9._-]* | .*) exe=desktop ;;
  esac
  printf '%s\n' "$exe"
}

startable() {
  valid_version "$1" && [ -d "$root/shells/$1" ] && [ ! -L "$root/shells/$1" ] &&
    [ -f "$root/shells/$1/$(executable_of "$1")" ] && [ -x "$root/shells/$1/$(executable_of "$1")" ]
}

choose() {
  for candidate in "$(field "$root/current.json" version)" "$(field "$root/current.json" last_known_good)"; do
    if [ -n "$candidate" ] && [ "$candidate" != "$installed" ] && startable "$candidate" && ! is_bad "$candidate"; then
      printf '%s\n' "$candidate"
      return
    fi
  done
  printf '%s\n' "$installed"
}

installed=$(sed -n '1{s/[[:space:]]//g;p;}' "$root/installed" 2>/dev/null)
if ! valid_version "$installed" || ! startable "$installed"; then
  say "the app is not installed properly in $root; run install.sh again"
  exit 1
fi
mkdir -p "$health" 2>/dev/null && chmod 700 "$health" 2>/dev/null
if [ -f "$log" ] && [ "$(wc -c <"$log")" -gt 65536 ]; then
  mv -f "$log" "$log.1" 2>/dev/null
fi

child=
signalled=
forward() {
  signalled=$1
  if [ -n "$child" ]; then kill -s "$1" "$child" 2>/dev/null; fi
}
trap 'forward TERM' TERM
trap 'forward HUP' HUP
trap 'signalled=INT' INT

# An asynchronous command gets /dev/null as stdin; the shell gets ours.
exec 3<&0

cleanup() { rm -f "$health/$$."*; }
# The fallback is chosen from what the pointer said when this launch began, never re-read: a
# stage running meanwhile may have moved it.
first_lkg=$(field "$root/current.json" last_known_good)
failed_list=$health/$$.failed  # "<version> <exit status> <start number>" per crash in this launch

failed_before() {
  [ -f "$failed_list" ] && awk -v v="$1" '$1 == v { found = 1 } END { exit !found }' "$failed_list"
}

fallback_for() {
  for candidate in "$first_lkg" "$installed"; do
    if [ -n "$candidate" ] && [ "$candidate" != "$1" ] && startable "$candidate" &&
      { [ "$candidate" = "$installed" ] || ! is_bad "$candidate"; } &&
      ! failed_before "$candidate"; then
      printf '%s\n' "$candidate"
      return
    fi
  done
  printf '%s\n' "$installed"
}

target=$(choose)
starts=0
while :; do
  starts=$((starts + 1))
  exe=$(executable_of "$target")
  tag=$health/$$.$starts
  mark=$tag.ok
  errlog=$tag.stderr
  fifo=$tag.fifo
  rm -f "$mark" "$errlog" "$fifo" "$tag.tee"
  note "start $target (launcher pid $$, start $starts)"
  failed_env=
  if [ -s "$failed_list" ]; then failed_env=$failed_list; fi
  # The shell's stderr goes to ours as usual and, through tee, to errlog for a crash report.
  if mkfifo "$fifo" 2>/dev/null; then
    : >"$tag.tee"
    (tee "$errlog" <"$fifo" >&2; rm -f "$tag.tee") &
    DESKTOP_INSTALL_ROOT=$root DESKTOP_HEALTH_MARK=$mark DESKTOP_LAUNCHER=$self DESKTOP_FAILED_SHELLS=$failed_env \
      "$root/shells/$target/$exe" "$@" <&3 2>"$fifo" 3<&- &
  else
    DESKTOP_INSTALL_ROOT=$root DESKTOP_HEALTH_MARK=$mark DESKTOP_LAUNCHER=$self DESKTOP_FAILED_SHELLS=$failed_env \
      "$root/shells/$target/$exe" "$@" <&3 3<&- &
  fi
  child=$!
  # `wait` returns early when a trapped signal arrives; wait again until the shell has exited.
  while :; do
    before=$signalled
    wait "$child"
    code=$?
    if [ "$signalled" = "$before" ]; then break; fi
    if ! kill -0 "$child" 2>/dev/null; then break; fi
  done
  child=
  rm -f "$fifo"
  # Let tee finish copying what the shell wrote (at most about 5 s), whatever happens next: the
  # crash record needs it, and a tee still running must not write after the cleanup.
  tries=0
  while [ -e "$tag.tee" ] && [ "$tries" -lt 50 ]; do
    sleep 0.1 2>/dev/null || sleep 1
    tries=$((tries + 1))
  done
  if [ -f "$mark" ]; then
    rm -f "$mark" "$errlog"
    note "shell $target was healthy; exit $code"
    if [ -s "$failed_list" ]; then
      rm -f "$failed_list"  # recorded by the healthy shell
    fi
    if [ "$code" = "$RESTART_CODE" ] && [ -z "$signalled" ] && [ "$starts" -lt "$MAX_STARTS" ]; then
      first_lkg=$(field "$root/current.json" last_known_good)
      target=$(choose)
      continue
    fi
    cleanup
    exit "$code"
  fi
  case $code in
    0 | 129 | 130 | 143) stopped=yes ;;  # a clean exit, or SIGHUP/SIGINT/SIGTERM: not a crash
    *) stopped= ;;
  esac
  if [ -n "$signalled" ] || [ -n "$stopped" ] || [ "$starts" -ge "$MAX_STARTS" ]; then
    note "shell $target exited $code before it was healthy${signalled:+ (stopped by SIG$signalled)}; not blamed"
    cleanup
    exit "$code"
  fi
  if [ "$target" = "$installed" ]; then
    note "the installed shell $target exited $code before it was healthy"
    if [ -s "$failed_list" ]; then
      say "the installed version $installed failed to start too (exit status $code); nothing was marked bad:" \
        "the cause looks like this computer's, not the app's"
    fi
    cleanup
    exit "$code"
  fi
  printf '%s %s %s\n' "$target" "$code" "$starts" >>"$failed_list"
  next=$(fallback_for "$target")
  note "shell $target exited $code before it was healthy: crashed at startup; falling back from $target to $next"
  say "version $target of the app failed to start (exit status $code); starting $next instead"
  target=$next
done

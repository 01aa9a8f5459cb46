#!/bin/sh
# Remove Desktop Shell installed for this user by install.sh:
#
#     ~/.local/share/desktop-shell-app/uninstall.sh [--purge]
#
# Removes the install root (the launcher, every shell, its state), the menu entry, the icon and
# ~/.local/bin/desktop-shell. Your data (notes, settings, downloaded runtimes and logs in
# ~/.local/share/desktop-shell) stays, unless --purge is given. Quit the app first.
set -eu

data=${XDG_DATA_HOME:-$HOME/.local/share}
root=${DESKTOP_SHELL_ROOT:-$data/desktop-shell-app}
purge=
for arg in "$@"; do
  case $arg in
    --purge) purge=yes ;;
    -h | --help)
      sed -n '2,8s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *)
      printf 'uninstall.sh: unknown option %s (use --purge to remove your data too)\n' "$arg" >&2
      exit 2
      ;;
  esac
done

rm -f "$data/applications/desktop-shell.desktop" "$data/icons/hicolor/scalable/apps/desktop-shell.svg"
link=$HOME/.local/bin/desktop-shell
if [ -L "$link" ] && [ "$(readlink "$link")" = "$root/desktop-shell" ]; then
  rm -f "$link"
fi
# Only a directory that is an install root (it names an installed version) is removed.
if [ -d "$root" ] && [ ! -L "$root" ] && [ -f "$root/installed" ]; then
  rm -rf "$root"
  echo "removed $root"
elif [ -e "$root" ]; then
  printf 'uninstall.sh: %s does not look like an install of Desktop Shell; left alone\n' "$root" >&2
fi
if [ -n "$purge" ]; then
  rm -rf "$data/desktop-shell"
  echo "removed your data in $data/desktop-shell"
else
  echo "your data in $data/desktop-shell was kept (uninstall.sh --purge removes it)"
fi
if command -v update-desktop-database >/dev/null 2>&1; then
  update-desktop-database "$data/applications" >/dev/null 2>&1 || true
fi

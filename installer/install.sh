#!/bin/sh
# Install Desktop Shell for the current user: no root needed. Run it from the unpacked archive:
#
#     ./install.sh
#
# It puts the app in ${XDG_DATA_HOME:-~/.local/share}/desktop-shell-app (DESKTOP_SHELL_ROOT=DIR
# installs elsewhere), with its launcher, a menu entry and an icon, and ~/.local/bin/desktop-shell
# when ~/.local/bin exists. Running it again repairs or upgrades an install; your data
# (~/.local/share/desktop-shell) is never touched. uninstall.sh (also copied into the install)
# removes it again.
set -eu
umask 077

die() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 1
}

here=$(cd "$(dirname "$0")" && pwd -P)
build=$here/shell
info=$build/_internal/build-info.json
[ -f "$info" ] || die "no app build next to this script ($build); unpack the whole archive first"
field() { sed -n "s/^ *\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$info" | sed -n 1p; }
version=$(field version)
exe=$(field executable)
case $version in
  '' | *[!0-9A-Za-z.+!_-]* | *..* | [!0-9]*) die "the build says it is version '$version', which is not a version" ;;
esac
case $exe in
  '' | *[!A-Za-z0-9._-]* | .*) die "the build names no executable" ;;
esac
[ -x "$build/$exe" ] || die "the build has no executable $exe"

data=${XDG_DATA_HOME:-$HOME/.local/share}
root=${DESKTOP_SHELL_ROOT:-$data/desktop-shell-app}
case $root in
  /*) ;;
  *) root=$(pwd -P)/$root ;;
esac

# The install root is this user's alone: another user who could write there could make the app
# run their code.
if [ -e "$root" ] || [ -L "$root" ]; then
  if [ ! -d "$root" ] || [ -L "$root" ]; then die "$root exists and is not a directory"; fi
  [ -n "$(find "$root" -prune -user "$(id -u)" ! -perm -020 ! -perm -002)" ] ||
    die "$root belongs to another user or others can write to it; refusing to install there"
else
  mkdir -p "$root"
fi
chmod 700 "$root"
mkdir -p "$root/shells"

# The build goes in under a temporary name and is renamed into place: the launcher never sees
# half of it. The same build already installed is kept (idempotent).
if [ -d "$root/shells/$version" ] && cmp -s "$info" "$root/shells/$version/_internal/build-info.json"; then
  echo "version $version is already installed in $root"
else
  tmp=$root/shells/.$version.install-$$
  old=$root/shells/.$version.replaced-$$
  rm -rf "$tmp"
  cp -R "$build" "$tmp"
  if [ -e "$root/shells/$version" ]; then
    mv "$root/shells/$version" "$old"
  fi
  mv "$tmp" "$root/shells/$version"
  rm -rf "$old"
  rm -f "$root/records/$version.json"
fi

# A different version installed by hand is what runs next: drop the pointer to a staged shell
# (a newer one is found again at the next update check). The same version keeps it.
previous=$(sed -n '1{s/[[:space:]]//g;p;}' "$root/installed" 2>/dev/null || true)
if [ "$previous" != "$version" ]; then
  rm -f "$root/current.json"
fi
printf '%s\n' "$version" >"$root/.installed.tmp"
mv -f "$root/.installed.tmp" "$root/installed"

cp "$here/launcher.sh" "$root/.desktop-shell.tmp"
chmod 755 "$root/.desktop-shell.tmp"
mv -f "$root/.desktop-shell.tmp" "$root/desktop-shell"
cp "$here/uninstall.sh" "$root/.uninstall.sh.tmp"
chmod 755 "$root/.uninstall.sh.tmp"
mv -f "$root/.uninstall.sh.tmp" "$root/uninstall.sh"
launcher=$root/desktop-shell

# The menu entry: Exec quoted as the Desktop Entry Specification says ("\", '"', '`' and '$'
# escaped inside quotes, then "\" escaped again as a string value; "%" doubled).
exec_arg=$(printf '%s' "$launcher" | sed -e 's/\\/\\\\\\\\/g' -e 's/["`$]/\\\\&/g' -e 's/%/%%/g')
try_exec=$(printf '%s' "$launcher" | sed -e 's/\\/\\\\/g')
apps=$data/applications
icons=$data/icons/hicolor/scalable/apps
mkdir -p "$apps" "$icons"
cp "$build/desktop-shell.svg" "$icons/.desktop-shell.svg.tmp"
chmod 644 "$icons/.desktop-shell.svg.tmp"
mv -f "$icons/.desktop-shell.svg.tmp" "$icons/desktop-shell.svg"
sed -e "s|^Exec=.*|Exec=\"$(printf '%s' "$exec_arg" | sed 's/[|&\\]/\\&/g')\"|" \
  -e "s|^TryExec=.*|TryExec=$(printf '%s' "$try_exec" | sed 's/[|&\\]/\\&/g')|" \
  "$build/desktop-shell.desktop" >"$apps/.desktop-shell.desktop.tmp"
chmod 644 "$apps/.desktop-shell.desktop.tmp"
mv -f "$apps/.desktop-shell.desktop.tmp" "$apps/desktop-shell.desktop"
if command -v update-desktop-database >/dev/null 2>&1; then
  update-desktop-database "$apps" >/dev/null 2>&1 || true
fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then
  gtk-update-icon-cache -q "$data/icons/hicolor" >/dev/null 2>&1 || true
fi

bin=$HOME/.local/bin
if [ -d "$bin" ] && { [ ! -e "$bin/desktop-shell" ] || [ -L "$bin/desktop-shell" ]; }; then
  ln -sfn "$launcher" "$bin/desktop-shell"
fi

echo "installed Desktop Shell $version in $root"
echo "start it from your applications menu, or run $launcher"

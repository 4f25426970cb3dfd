#!/usr/bin/env bash
# Deletes the files named by notifications, but only regular files inside one directory.
#
#   pglisten --listen=del --print0 | examples/delete-files.sh /srv/uploads
#
# and, in the database (e.g. from an AFTER DELETE trigger on the table that lists the files):
#
#   SELECT pg_notify('del', '/srv/uploads/2024/report.pdf');   -- or a path relative to /srv/uploads
#
# Any database role can NOTIFY anything, so every name is treated as hostile:
#   - names arrive NUL-separated (--print0), so spaces and newlines in names are safe;
#   - a relative name is taken relative to the directory, never to the current directory;
#   - the directory part is resolved to its real location (`..` and symlinks followed), and the file
#     must be in the directory or below it: `../../etc/passwd`, `/etc/passwd` and a symlinked
#     subdirectory that leads outside are all refused;
#   - the last part must be a regular file: directories, devices, fifos and symlinks (wherever they
#     point) are refused, so a symlink is never followed to its target;
#   - every decision is logged on stderr, and the script carries on with the next name.
# Limitation of any shell version: a hostile local user who can rename directories inside the tree
# between the check and the `rm` could still redirect it. If local users are hostile, do the
# deletion in a program that uses unlinkat() relative to an opened directory.
set -u -o pipefail

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ]; then
  printf 'usage: pglisten --listen=CHANNEL --print0 | %s DIRECTORY\n' "$me" >&2
  exit 2
fi
if ! base=$(realpath -e -- "$1" 2>/dev/null) || [ ! -d "$base" ]; then
  log "not a directory: $(printf '%q' "$1")"
  exit 2
fi
[ "$base" = / ] && { log "refusing to work on /"; exit 2; }

while IFS= read -r -d '' name || [ -n "$name" ]; do
  shown=$(printf '%q' "$name") # names may hold newlines or escapes: log them quoted
  if [ -z "$name" ]; then
    log "refused an empty name"
    continue
  fi
  case "$name" in
    /*) path=$name ;;
    *) path=$base/$name ;;
  esac
  file=${path##*/}
  dir=${path%/*}
  [ -z "$dir" ] && dir=/
  if [ -z "$file" ] || [ "$file" = . ] || [ "$file" = .. ]; then
    log "refused $shown: not a file name"
    continue
  fi
  if ! realdir=$(realpath -e -- "$dir" 2>/dev/null); then
    log "refused $shown: no such directory"
    continue
  fi
  case "$realdir/" in
    "$base"/*) ;;
    *)
      log "refused $shown: outside $base"
      continue
      ;;
  esac
  target=$realdir/$file
  if [ -L "$target" ]; then
    log "refused $shown: a symbolic link"
  elif [ ! -e "$target" ]; then
    log "skipped $shown: no such file"
  elif [ ! -f "$target" ]; then
    log "refused $shown: not a regular file"
  elif rm -f -- "$target"; then
    log "deleted $(printf '%q' "$target")"
  else
    log "failed to delete $(printf '%q' "$target")"
  fi
done

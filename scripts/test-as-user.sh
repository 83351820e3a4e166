#!/usr/bin/env bash
# Runs the README's test command, scripts/test.sh, from a fresh clone of this
# checkout in a place where users run it, and fails if it fails:
#
#   scripts/test-as-user.sh user       # as an ordinary user with sudo rights,
#                                      # from a clone in its home (mode 700)
#   scripts/test-as-user.sh root-home  # as root, from a clone under /root
#                                      # (mode 700)
#
# CI (.ci/run) runs both after scripts/test.sh, which covers root in any
# other folder. `user` creates the user cbloss-test-user (password-less
# sudo, as a developer's account has), clones into ~/cbloss and runs
# scripts/test.sh there under that user: install-deps finds every package
# installed and calls neither sudo nor apt, the build and the tests run as
# the user. Both remove what they made afterwards (the user, its home, the
# clone) unless CBLOSS_KEEP=1.
#
# Needs root, git and sudo (scripts/install-deps.sh --container-tests). The
# clone is of HEAD: uncommitted changes are not tested.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=${1:-user}
USER_NAME=cbloss-test-user

if [[ $(id -u) != 0 ]]; then
  echo "test-as-user: run as root (it creates a user)" >&2
  exit 2
fi

start=$(date +%s)
finish() {
  local rc=$1
  echo "=== test-as-user $MODE: rc=$rc after $(($(date +%s) - start)) s"
  exit "$rc"
}

case $MODE in
  user)
    command -v sudo >/dev/null ||
      { echo "test-as-user: sudo is missing (scripts/install-deps.sh --container-tests)" >&2; exit 2; }
    remove_user() {
      rm -f /etc/sudoers.d/$USER_NAME
      if id "$USER_NAME" >/dev/null 2>&1; then
        userdel --force --remove "$USER_NAME" 2>/dev/null || true
      fi
    }
    remove_user  # left over from an interrupted run
    if [[ ${CBLOSS_KEEP:-0} != 1 ]]; then
      trap remove_user EXIT
    fi
    useradd --create-home --shell /bin/bash "$USER_NAME"
    home=$(getent passwd "$USER_NAME" | cut -d: -f6)
    chmod 700 "$home"
    echo "$USER_NAME ALL=(ALL) NOPASSWD: ALL" >/etc/sudoers.d/$USER_NAME
    chmod 0440 /etc/sudoers.d/$USER_NAME
    # The user may not be able to read this checkout (e.g. under /root):
    # root clones it into the user's home and hands the clone over.
    git clone --quiet --no-hardlinks "$ROOT" "$home/cbloss"
    chown -R "$USER_NAME:" "$home/cbloss"
    runuser -u "$USER_NAME" -- sudo -n true ||
      { echo "test-as-user: $USER_NAME has no working sudo" >&2; exit 1; }
    echo "=== test-as-user: scripts/test.sh as $USER_NAME (uid $(id -u "$USER_NAME")) in $home/cbloss"
    rc=0
    runuser -l "$USER_NAME" -c 'cd ~/cbloss && scripts/test.sh' || rc=$?
    finish "$rc"
    ;;
  root-home)
    clone=$(mktemp -d /root/cbloss-test-XXXXXX)
    if [[ ${CBLOSS_KEEP:-0} != 1 ]]; then
      trap 'rm -rf "$clone"' EXIT
    fi
    chmod 700 "$clone"
    git clone --quiet --no-hardlinks "$ROOT" "$clone/cbloss"
    echo "=== test-as-user: scripts/test.sh as root in $clone/cbloss (/root mode $(stat -c %a /root))"
    rc=0
    (cd "$clone/cbloss" && scripts/test.sh) || rc=$?
    finish "$rc"
    ;;
  *)
    echo "usage: $0 [user|root-home]" >&2
    exit 2
    ;;
esac

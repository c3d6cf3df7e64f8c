#!/usr/bin/env bash
# Install what LATM's sandbox tiers need on Debian/Ubuntu; safe to run again.
#   tier 1: bubblewrap (bwrap), run as an unprivileged uid, + Landlock + seccomp
#   tier 2: Landlock + seccomp + unprivileged uid (used where namespaces are refused)
# Landlock is in the kernel; seccomp filters are compiled with libseccomp through the
# pyseccomp package (a dependency of the project, installed with it). Generated tools run
# under a python3 that the sandbox user (nobody) can read: Debian's /usr/bin/python3.
# As root, installs the missing packages non-interactively; otherwise says what is missing.
set -euo pipefail

packages=(bubblewrap libseccomp2 python3-minimal libpython3-stdlib)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    echo "sandbox-setup: installed ${missing[*]}"
  else
    echo "sandbox-setup: missing ${missing[*]}; as root run:" \
      "apt-get update && apt-get install -y ${missing[*]}" >&2
  fi
else
  echo "sandbox-setup: bubblewrap, libseccomp2 and python3 are installed"
fi

# Facts that decide the tier (reported in full by 'latm doctor').
if [ -r /proc/sys/kernel/apparmor_restrict_unprivileged_userns ] &&
  [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns)" = 1 ]; then
  echo "sandbox-setup: AppArmor restricts unprivileged user namespaces: bwrap (tier 1) may" \
    "be refused; tier 2 (Landlock + seccomp) is used then"
fi
if [ -r /proc/sys/user/max_user_namespaces ] &&
  [ "$(cat /proc/sys/user/max_user_namespaces)" = 0 ]; then
  echo "sandbox-setup: user namespaces are disabled: tier 2 (Landlock + seccomp) is used"
fi

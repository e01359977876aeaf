# Sourced by scripts/test-package and scripts/test-systemd: a minimal Debian root made with
# debootstrap once and cached, and throw-away copies of it.
#
# The cache is $PBX_LISTENER_CACHE (default ~/.cache/pbx-listener): keep it between CI runs and
# the roots are not rebuilt (a rebuild takes about 40 s and needs the Debian mirror apt uses).
# A root is keyed by its recipe (suite, variant, packages): change the recipe and a new one is
# made. Copies are overlay mounts on the cached root, so each test starts from a clean system
# and the cache is never written to.

cache_dir="${PBX_LISTENER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pbx-listener}"
debian_suite=bookworm

need_tools() {
  local missing=()
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  for extra in "$@"; do
    case "$extra" in
      systemd-nspawn) command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container) ;;
      *) command -v "$extra" >/dev/null 2>&1 || missing+=("$extra") ;;
    esac
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> Installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The Debian mirror this machine's apt uses (so debootstrap goes where apt goes); empty for
# debootstrap's default.
apt_mirror() {
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 ~ /main/ {for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list)
  fi
  case "$uri" in *security*) uri="" ;; esac
  printf '%s' "$uri"
}

# debian_root PACKAGES...: prints the path of a cached root with those packages (made if
# missing). Serialised with flock so parallel runs build it once.
debian_root() {
  local include
  include=$(printf '%s\n' "$@" | sort -u | paste -sd, -)
  local key
  key=$(printf '%s %s %s' "$debian_suite" minbase "$include" | sha256sum | cut -c1-12)
  local dir="$cache_dir/debian-$debian_suite-$key"
  mkdir -p "$cache_dir"
  (
    flock 9
    if [ ! -f "$dir/ready" ]; then
      echo "==> debootstrap $debian_suite (minbase + $include) into $dir (cached for next time)" >&2
      rm -rf "$dir.tmp"
      mkdir -p "$dir.tmp"
      local started=$SECONDS
      # shellcheck disable=SC2046
      if ! debootstrap --variant=minbase --include="$include" "$debian_suite" "$dir.tmp/root" $(apt_mirror) \
        >"$dir.tmp/debootstrap.log" 2>&1; then
        tail -n 30 "$dir.tmp/debootstrap.log" >&2
        echo "debootstrap failed (log above)" >&2
        exit 1
      fi
      rm -rf "$dir"
      mv "$dir.tmp" "$dir"
      echo "$include" >"$dir/ready"
      echo "==> debootstrap took $((SECONDS - started)) s" >&2
    fi
  ) 9>"$cache_dir/.lock" || return 1
  printf '%s/root' "$dir"
}

# overlay_root CACHED_ROOT WORK_DIR: mounts a writable copy of CACHED_ROOT at WORK_DIR/root
# (writes go to WORK_DIR/upper). Unmount with overlay_unmount WORK_DIR.
overlay_root() {
  local lower="$1" work="$2"
  mkdir -p "$work/upper" "$work/work" "$work/root"
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/upper,workdir=$work/work" "$work/root"
}

overlay_unmount() {
  local work="$1"
  for m in proc dev/pts dev sys; do
    mountpoint -q "$work/root/$m" 2>/dev/null && umount -l "$work/root/$m" || true
  done
  mountpoint -q "$work/root" 2>/dev/null && umount -l "$work/root" || true
}

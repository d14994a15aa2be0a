# Shared helpers for the runq asset scripts. Sourced, not executed.

log() { printf 'runq-assets: %s\n' "$*" >&2; }
die() { printf 'runq-assets: error: %s\n' "$*" >&2; exit 1; }

# need CMD... : fail early, naming the missing tool, instead of half-way through.
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "required command '$c' not found in PATH"
	done
}

# make_tmpdir: set $TMPD to a scratch dir removed when the script exits.
# Call it directly (not in $(...)), so the trap lands in the script's shell.
make_tmpdir() {
	TMPD=$(mktemp -d "${TMPDIR:-/tmp}/runq-assets.XXXXXX")
	trap 'rm -rf "$TMPD"' EXIT
}

# Field of the candidate version from 'apt-cache show'.
pkg_field() {
	apt-cache show --no-all-versions "$1" 2>/dev/null | awk -v f="$2:" '$1 == f { print $2; exit }'
}

# download_deb PKG CACHEDIR [VERSION] -> prints the path of a verified .deb
# (the candidate version unless VERSION is given). A cached file is reused when
# its SHA256 matches the archive's.
download_deb() {
	local pkg=$1 cache=$2 ver=${3:-} sha deb arch
	[[ -n $ver ]] || ver=$(pkg_field "$pkg" Version)
	sha=$(pkg_field "$pkg=$ver" SHA256)
	arch=$(pkg_field "$pkg=$ver" Architecture)
	[[ -n $ver ]] || die "package $pkg unknown to apt-cache (run 'apt-get update'?)"
	# apt-get download names files with the epoch colon encoded as %3a.
	deb="$cache/${pkg}_${ver//:/%3a}_${arch:-amd64}.deb"
	if [[ -f $deb ]] && { [[ -z $sha ]] || sha256sum "$deb" | grep -q "^$sha "; }; then
		log "using cached $(basename "$deb")"
	else
		log "fetching package $pkg $ver ..."
		mkdir -p "$cache"
		# Download into a private dir, then rename: an interrupted run leaves no bad .deb.
		local part
		part=$(mktemp -d "$cache/.partial.XXXXXX")
		# apt drops to user _apt for downloads; let it write here (else it warns
		# and downloads unsandboxed as root).
		if id _apt >/dev/null 2>&1; then chown _apt "$part"; fi
		(cd "$part" && apt-get download -q "$pkg=$ver") >&2 ||
			{ rm -rf "$part"; die "apt-get download $pkg=$ver failed"; }
		local got
		got=$(find "$part" -maxdepth 1 -name '*.deb' | head -n1)
		[[ -n $got ]] || { rm -rf "$part"; die "apt-get download $pkg=$ver produced no .deb"; }
		if [[ -n $sha ]] && ! sha256sum "$got" | grep -q "^$sha "; then
			rm -rf "$part"
			die "checksum mismatch for downloaded $pkg"
		fi
		chown root:root "$got" && chmod 0644 "$got"
		mv -f "$got" "$deb"
		rm -rf "$part"
	fi
	printf '%s\n' "$deb"
}

#!/usr/bin/env bash
# build-deb.sh: builds the Debian package into target/debian/.
#
# 1. installs cargo-deb if it is missing (`cargo install cargo-deb --locked`,
#    from crates.io);
# 2. builds the release binary with the package's Debian version as its
#    build label (SOCKHERD_BUILD=0.1.0-2: `sockherd --version` prints
#    `sockherd 0.1.0 (0.1.0-2)`), so that every revision of the package is a
#    build that says which it is: after an upgrade re-executes a running
#    manager (postinst, docs/upgrade.md), its Version property shows the
#    revision it now runs. The label is the version cargo-deb gives the
#    package: `--deb-version V` as given, else the crate's version and
#    `--deb-revision R` (default 1);
# 3. generates, with that binary, the man pages (`sockherd manpage`, hidden)
#    and the bash/zsh/fish completions (`sockherd completions SHELL`) into
#    target/assets/: they describe exactly the binary that is packaged, and
#    nothing generated is kept in git;
# 4. runs `cargo deb --no-build`: what goes where is the asset list in
#    Cargo.toml ([package.metadata.deb]), maintainer scripts are in
#    packaging/debian/.
#
# Usage: packaging/build-deb.sh [CARGO-DEB OPTIONS]
#   e.g. packaging/build-deb.sh --deb-revision 2   (sockherd_0.1.0-2_amd64.deb)
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb" >&2
    cargo install cargo-deb --locked
fi

# The Debian version cargo-deb will write, from the same arguments.
version=$(awk -F'"' '/^version = / { print $2; exit }' Cargo.toml)
revision=1
deb_version=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
        --deb-revision) revision=${args[i + 1]:-} ;;
        --deb-revision=*) revision=${args[i]#*=} ;;
        --deb-version) deb_version=${args[i + 1]:-} ;;
        --deb-version=*) deb_version=${args[i]#*=} ;;
    esac
done
label=${deb_version:-$version${revision:+-$revision}}
if ((${#label} > 48)); then
    echo "build-deb: the build label '$label' is longer than the 48 bytes a binary holds" >&2
    exit 2
fi
echo "build-deb: building sockherd $version with the build label $label" >&2
# Cargo rebuilds the crate when SOCKHERD_BUILD changes (it is read with
# option_env!), so two revisions built in a row are two builds.
SOCKHERD_BUILD=$label cargo build --release --locked -p sockherd
reported=$(target/release/sockherd --version)
if [ "$reported" != "sockherd $version ($label)" ]; then
    echo "build-deb: target/release/sockherd reports '$reported', not 'sockherd $version ($label)'" >&2
    exit 1
fi

assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/sockherd manpage "$assets/man"
gzip -9n "$assets"/man/*.1
target/release/sockherd completions bash >"$assets/completions/sockherd.bash"
target/release/sockherd completions zsh >"$assets/completions/_sockherd"
target/release/sockherd completions fish >"$assets/completions/sockherd.fish"

cargo deb --no-build --locked -p sockherd "$@"

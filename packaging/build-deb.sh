#!/usr/bin/env bash
# build-deb.sh: builds the Debian package into target/debian/.
#
# 1. installs cargo-deb if it is missing (`cargo install cargo-deb --locked`,
#    from crates.io);
# 2. builds the release binary;
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

cargo build --release --locked -p sockherd

assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
target/release/sockherd manpage "$assets/man"
gzip -9n "$assets"/man/*.1
target/release/sockherd completions bash >"$assets/completions/sockherd.bash"
target/release/sockherd completions zsh >"$assets/completions/_sockherd"
target/release/sockherd completions fish >"$assets/completions/sockherd.fish"

cargo deb --no-build --locked -p sockherd "$@"

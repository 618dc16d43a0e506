# models-fetch, built from this repository. The crate is edition 2024 with rust-version 1.89:
# it needs a nixpkgs whose Rust is at least that (nixos-25.11 or unstable).
{ lib, rustPlatform }:
let
  manifest = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).package;
in
rustPlatform.buildRustPackage {
  pname = manifest.name;
  inherit (manifest) version;

  # The crate's files only: a change to the tests, the docs or the Nix files does not rebuild
  # it. The schema is compiled in (include_str! in src/index/schema.rs).
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [ ../Cargo.toml ../Cargo.lock ../src ./schema.json ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  # The unit tests only. The integration tests (tests/it, not in src above) drive nginx,
  # Python's huggingface_hub and ajv-cli; .ci/test runs them.
  cargoTestFlags = [ "--lib" ];

  meta = {
    inherit (manifest) description;
    license = [ lib.licenses.mit lib.licenses.asl20 ];
    mainProgram = "models-fetch";
    platforms = lib.platforms.linux;
  };
}

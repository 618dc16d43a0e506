{
  description = "models-fetch: verified machine-learning model files on NixOS hosts (services.models)";

  # The crate needs Rust 1.89 or later (edition 2024).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forEachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forEachSystem (pkgs: {
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.models-fetch;
        models-fetch = pkgs.callPackage ./nix/package.nix { };
      });

      overlays.default = final: _prev: {
        models-fetch = final.callPackage ./nix/package.nix { };
        # fetchModelFromIndex { id = "..."; indexPath = ./index.json; }: the file as a
        # fixed-output derivation (nix/fetch-model.nix).
        fetchModelFromIndex = final.callPackage ./nix/fetch-model.nix { };
      };

      # services.models, its package defaulting to this flake's.
      nixosModules.default = { lib, pkgs, ... }: {
        imports = [ ./module.nix ];
        services.models.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      };

      checks = forEachSystem (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;

        # The module's logic on the cases CI evaluates (tests/nix/cases.nix), checked at
        # evaluation time; CI checks more of them (tests/it/nix.rs), with the daemon.
        nix-lib =
          let
            t = import ./tests/nix/cases.nix;
            wrongChecks = lib.filter (c: c.got != c.want) t.checks;
            wrongCases = lib.filter
              (c:
                if c.refusedBy == [ ] then c.failedAssertions != [ ]
                else !lib.all (part: lib.any (lib.hasInfix part) c.failedAssertions) c.refusedBy)
              t.cases;
            failing = map (c: c.name) (wrongChecks ++ wrongCases);
          in
          if failing == [ ] then pkgs.runCommand "models-fetch-nix-lib-tests" { } "touch $out"
          else throw "tests/nix/cases.nix fails: ${lib.concatStringsSep "; " failing}";

        vm = pkgs.testers.runNixOSTest (import ./nix/tests/vm.nix { inherit self; });
      });
    };
}

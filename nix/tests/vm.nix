# The NixOS VM test, for pkgs.testers.runNixOSTest (flake.nix: checks.<system>.vm).
#
#   hub      nginx as a fake Hugging Face Hub: a private repository whose resolve URL answers
#            401 without the token, else 302 to a CDN on another port (another origin, so the
#            token must not follow; the CDN answers 400 to any Authorization header) with
#            X-Repo-Commit, X-Linked-Etag and X-Linked-Size.
#   machine  services.models with a token file, one model, and a consumer service.
#
# Checks: the unit is active with its STATUS; the file is published, verified, owned by the
# group; the consumer reads it; a wrong checksum is refused (exit 65, nothing published); with
# the network gone (machine.block()) a restart still reports ready from the cache.
#
# Run: nix build .#checks.x86_64-linux.vm -L   (or nix flake check; KVM makes it fast)
{ self }:
{ lib, pkgs, ... }:
let
  # The model's bytes are known at evaluation time, so the index carries their sha256 and size.
  content = lib.concatStrings (lib.genList (i: "models-fetch VM test, block ${toString i}\n") 4000);
  sha256 = builtins.hashString "sha256" content;
  size = builtins.stringLength content;
  commit = builtins.hashString "sha1" "models-fetch VM test commit";
  token = "hf_vmTestToken0123456789abcdef";

  cdn = pkgs.runCommand "models-fetch-vm-cdn" { } ''
    mkdir "$out"
    cp ${pkgs.writeText "tiny.safetensors" content} "$out/${sha256}"
  '';

  entry = id: artifact: {
    inherit id artifact;
    version = "1.0.0";
    chakra = "ajna";
    frequencyHz = 852;
    geometry = { pattern = "triangle"; dimensions = 3; };
    temporalScope = "daily";
    semanticTags = [ "vm-test" ];
    dataset = { id = "vm-test"; url = "https://example.org/datasets/vm-test"; };
    training = { repo = "https://example.org/training/vm-test"; command = "train"; };
    license = "MIT";
    provenance.runId = "vm-test";
  };
  index = pkgs.writeText "index.json" (builtins.toJSON {
    models = [
      (entry "tiny-private-v1" {
        filename = "tiny.safetensors";
        inherit sha256;
        sizeBytes = size;
        repo = "test-org/tiny";
      })
    ];
  });
  # The same bytes (from the CDN, by downloadUrl) under a sha256 they do not have.
  badIndex = pkgs.writeText "bad-index.json" (builtins.toJSON {
    models = [
      (entry "tiny-bad-v1" {
        filename = "tiny.safetensors";
        sha256 = builtins.hashString "sha256" "other bytes";
        sizeBytes = size;
        downloadUrl = "http://hub:8080/${sha256}";
      })
    ];
  });

  statusIs = pattern: "systemctl show -p StatusText --value models-fetch.service | grep -q '${pattern}'";
in
{
  name = "models-fetch";

  nodes.hub = {
    networking.firewall.allowedTCPPorts = [ 80 8080 ];
    services.nginx = {
      enable = true;
      virtualHosts.hub = {
        default = true;
        listen = [{ addr = "0.0.0.0"; port = 80; }];
        locations."= /test-org/tiny/resolve/main/tiny.safetensors".extraConfig = ''
          if ($http_authorization != "Bearer ${token}") {
            add_header X-Error-Code RepoNotFound always;
            return 401;
          }
          add_header X-Repo-Commit ${commit} always;
          add_header X-Linked-Etag '"${sha256}"' always;
          add_header X-Linked-Size ${toString size} always;
          return 302 http://hub:8080/${sha256}?X-Amz-Expires=3600&X-Amz-Signature=vmtest;
        '';
      };
      virtualHosts.cdn = {
        default = true;
        listen = [{ addr = "0.0.0.0"; port = 8080; }];
        root = cdn;
        locations."/".extraConfig = ''
          if ($http_authorization) {
            return 400;
          }
        '';
      };
    };
  };

  nodes.machine = {
    imports = [ self.nixosModules.default ];

    services.models = {
      enable = true;
      indexPath = index;
      huggingFace = {
        enable = true;
        endpoint = "http://hub";
        tokenFile = "/var/lib/secrets/hf-token";
      };
      chakraModels.ajna = [ "tiny-private-v1" ];
      consumers.model-reader.models = [ "tiny-private-v1" ];
    };

    # A test token, written before the service starts (a real host uses sops-nix, agenix...).
    systemd.tmpfiles.rules = [
      "d /var/lib/secrets 0700 root root -"
      "f /var/lib/secrets/hf-token 0600 root root - ${token}"
    ];

    # A consumer with a DynamicUser of its own: it reaches the models only through the module.
    systemd.services.model-reader = {
      wantedBy = [ "multi-user.target" ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        DynamicUser = true;
      };
      script = ''
        echo "${sha256}  $INIXOS_MODEL_STORE/tiny-private-v1/tiny.safetensors" | sha256sum -c
        test "$HF_HUB_OFFLINE" = 1
        test -L "$HF_HUB_CACHE/models--test-org--tiny/snapshots/${commit}/tiny.safetensors"
      '';
    };

    environment.etc."models-fetch/bad.toml".text = ''
      index = "${badIndex}"
      store_dir = "/tmp/bad-store"
      cache_dir = "/tmp/bad-store/hf-cache"
      retry_base_delay = "1s"
    '';
  };

  testScript = ''
    start_all()
    hub.wait_for_unit("nginx.service")
    hub.wait_for_open_port(80)
    hub.wait_for_open_port(8080)

    with subtest("the service is active and reports the model ready"):
        machine.wait_for_unit("models-fetch.service")
        machine.wait_until_succeeds("${statusIs "^1/1 models ready"}", timeout=120)
        print(machine.succeed("systemctl status models-fetch.service --no-pager"))

    with subtest("the file is published, verified and readable by the group only"):
        machine.succeed("echo '${sha256}  /var/lib/models/tiny-private-v1/tiny.safetensors' | sha256sum -c")
        machine.succeed("test -L /var/lib/models/by-chakra/ajna/tiny-private-v1")
        machine.succeed("stat -c '%G %a' \"$(readlink -f /var/lib/models/tiny-private-v1/tiny.safetensors)\" | grep -qx 'models 640'")
        machine.succeed("models-fetch status")
        machine.succeed("models-fetch wait --timeout 10s tiny-private-v1")
        # The token reached the hub through LoadCredential; the CDN never saw it (it would
        # have answered 400).
        hub.succeed("grep -q 'GET /${sha256}?' /var/log/nginx/access.log")

    with subtest("a consumer waits for the model and reads it"):
        machine.wait_for_unit("model-reader.service")

    with subtest("a wrong checksum is refused and nothing is published"):
        machine.succeed("rc=0; models-fetch sync --config /etc/models-fetch/bad.toml || rc=$?; test $rc -eq 65")
        machine.fail("test -e /tmp/bad-store/tiny-bad-v1/tiny.safetensors")

    with subtest("offline, a restart is ready from the cache"):
        machine.block()
        machine.systemctl("restart models-fetch.service")
        machine.wait_for_unit("models-fetch.service")
        machine.wait_until_succeeds("${statusIs "^1/1 models ready"}", timeout=30)
        machine.unblock()
  '';
}

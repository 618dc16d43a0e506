# The NixOS module `services.models`: the options, and their wiring into NixOS. Every value it
# deploys (the daemon's config file, the unit, the consumers' settings with their priorities,
# the assertions and warnings) is computed by nix/lib.nix, plain Nix that CI evaluates for real
# (tests/nix/, tests/it/nix.rs); nixpkgs' module system cannot run there. What the daemon
# checks itself (the index, the ids, every config key) it checks here too, at build time
# (checkConfig). README.md, section "NixOS", describes its use.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types literalExpression;
  cfg = config.services.models;
  mf = import ./nix/lib.nix;
  inherit (mf) defaults;

  exe = lib.getExe cfg.package;

  # The index the assertions read, copied into the store: the service reads exactly that
  # file, even when indexPath names a file outside the store.
  indexFile = pkgs.writeText "models-index.json" (builtins.readFile cfg.indexPath);

  # The option values as nix/lib.nix takes them.
  values = {
    inherit (cfg) indexPath deployedModels chakraModels modelStorePath verifyChecksums mirrors
      user group settings;
    huggingFace = { inherit (cfg.huggingFace) enable cacheDir tokenFile endpoint; };
    consumers = lib.mapAttrs (_: c: { inherit (c) models timeoutSec; }) cfg.consumers;
  };
  # The consumers' units as NixOS merged them, for the assertions and warnings only.
  services = lib.mapAttrs (name: _: config.systemd.services.${name} or { }) cfg.consumers;
  # indexInConfig: the index path the config file names.
  evaluate = indexInConfig: mf.evaluate {
    cfg = values;
    inherit exe services;
    indexFile = indexInConfig;
    kill = "${pkgs.coreutils}/bin/kill";
  };
  # The service names the index at its stable /etc path; a config change then only changes
  # the /etc links and reloads the service (reloadTriggers), downloads go on.
  evaluated = evaluate "/etc/models-fetch/index.json";

  # The daemon's config file is JSON (builtins.toJSON, in nix/lib.nix), which the daemon reads
  # by its .json name as strictly as TOML; the tests hand the daemon the very text deployed here.
  configText = evaluated.json;
  canRun = pkgs.stdenv.buildPlatform.canExecute pkgs.stdenv.hostPlatform;
  # With checkConfig, the daemon checks the file at build time against the same index in the
  # store: an unknown id, a stub entry, a schema error in the index or a typo in `settings`
  # fails the build with the daemon's own message, not the service.
  configFile =
    if cfg.checkConfig && canRun then
      pkgs.runCommand "models-fetch.json"
        {
          inherit configText;
          checkText = (evaluate "${indexFile}").json;
          passAsFile = [ "configText" "checkText" ];
        } ''
        cp "$checkTextPath" check.json
        ${evaluated.checkCommand { inherit exe; config = "check.json"; }}
        cp "$configTextPath" "$out"
      ''
    else pkgs.writeText "models-fetch.json" configText;

  mirrorModule = {
    options = {
      url = mkOption {
        type = types.str;
        example = "https://models.example.org/by-sha256";
        description = "The mirror's base URL; a file is `{url}/{sha256}`.";
      };
      credentialsFile = mkOption {
        type = types.nullOr types.path;
        default = null;
        example = "/run/secrets/mirror-token";
        description = ''
          A file holding the mirror's credential (a bearer token, or `user:password` with
          `auth = "basic"`), outside the Nix store. systemd passes it to the service with
          LoadCredential= (as mirror-<n>); models-fetch sends it only to this mirror's origin,
          below its base path, and never logs it.
        '';
      };
      auth = mkOption {
        type = types.enum [ "bearer" "basic" ];
        default = "bearer";
        description = "How the credential is sent: `Authorization: Bearer` or `Basic`.";
      };
    };
  };

  sc = cfg.siteCache;
  siteCacheSettings = { inherit (sc) listen upstream cacheDir maxSize inactive sliceSize resolvers caFile; };
  siteCacheChecks = mf.siteCacheChecks siteCacheSettings;
  nginxCache = "/var/cache/nginx";

  consumerModule = {
    options = {
      models = mkOption {
        type = types.listOf types.str;
        default = mf.consumerDefaults.models;
        example = [ "ajna-insight-v2" ];
        description = ''
          Model ids the service needs before it starts; `[ ]` waits for every deployed model.
          Each must be deployed (deployedModels or chakraModels).
        '';
      };
      timeoutSec = mkOption {
        type = types.nullOr types.ints.positive;
        default = mf.consumerDefaults.timeoutSec;
        description = ''
          How long the service's start waits for its models before it fails (exit 75);
          `null` waits for ever. The service's TimeoutStartSec= defaults to this plus 90 s
          (`infinity` for `null`); a TimeoutStartSec= of the service's own wins, and one
          shorter than that gets a warning.
        '';
      };
    };
  };
in
{
  options.services.models = {
    enable = lib.mkEnableOption ''
      the model index (/etc/models-fetch/index.json and the INIXOS_MODEL_* variables); with
      huggingFace.enable, models-fetch.service fetches, verifies and publishes the listed models
    '';

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./nix/package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./nix/package.nix { } (the flake's module: its packages.default)";
      description = "The models-fetch package.";
    };

    indexPath = mkOption {
      type = types.path;
      default = defaults.indexPath;
      defaultText = literalExpression "./nix/index.json";
      description = ''
        The model index (JSON, checked against nix/schema.json). Read at evaluation time for
        the assertions and copied into the store.
      '';
    };

    huggingFace = {
      enable = mkOption {
        type = types.bool;
        default = defaults.huggingFace.enable;
        description = ''
          Run models-fetch.service, which fetches every listed model from the Hugging Face Hub
          (or its entry's downloadUrl, or a mirror), verifies its sha256 and size against the
          index, and publishes it under modelStorePath.
        '';
      };
      cacheDir = mkOption {
        type = types.path;
        default = defaults.huggingFace.cacheDir;
        description = ''
          The download cache, in the Hugging Face Hub cache layout (HF_HUB_CACHE and
          HUGGINGFACE_HUB_CACHE for consumers).
          Keep it inside modelStorePath: its blobs are the published files.
        '';
      };
      tokenFile = mkOption {
        type = types.nullOr types.path;
        default = defaults.huggingFace.tokenFile;
        example = "/run/secrets/hf-token";
        description = ''
          A file holding the Hub token, for private repositories; outside the Nix store (the
          store is world-readable). systemd passes it to the service with LoadCredential=; it
          never enters the config file, the environment or a command line. The file must exist
          when the service starts.
        '';
      };
      endpoint = mkOption {
        type = types.str;
        default = defaults.huggingFace.endpoint;
        example = "https://hf-mirror.example.org";
        description = "The Hub endpoint (as HF_ENDPOINT); public-Hub downloadUrls follow it.";
      };
    };

    deployedModels = mkOption {
      type = types.listOf types.str;
      default = defaults.deployedModels;
      example = [ "anahata-heart-v1" ];
      description = "Model ids (from the index) to deploy.";
    };

    chakraModels = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = defaults.chakraModels;
      example = { ajna = [ "ajna-insight-v2" ]; };
      description = ''
        Model ids to deploy, grouped by chakra (the schema's chakra names); each must be
        listed under its own entry's chakra. Published also as
        modelStorePath/by-chakra/<chakra>/<id>.
      '';
    };

    modelStorePath = mkOption {
      type = types.path;
      default = defaults.modelStorePath;
      description = ''
        Where the models are published: modelStorePath/<id>/<filename>. Below /var/lib it is
        the service's StateDirectory=; anywhere else it needs a static `user`.
      '';
    };

    verifyChecksums = mkOption {
      type = types.bool;
      default = defaults.verifyChecksums;
      description = ''
        Re-hash files found in the cache that models-fetch did not verify itself before using
        them; `false` trusts them by size. Downloads are always verified.
      '';
    };

    mirrors = mkOption {
      type = types.listOf (types.either types.str (types.submodule mirrorModule));
      default = defaults.mirrors;
      example = literalExpression ''[ "https://models.example.org/by-sha256" { url = "https://bucket.internal/models"; credentialsFile = "/run/secrets/mirror-token"; } ]'';
      description = ''
        Content-addressed mirrors (`{base}/{sha256}`), tried after the model's own source: a
        base URL, or `{ url; credentialsFile; auth; }` for a mirror that needs credentials.
      '';
    };

    siteCache = {
      enable = lib.mkEnableOption ''
        the site cache on this host: nginx as a caching reverse proxy of the Hub (upstream)
        that follows its redirects to the CDN and caches the CDN's bytes by sha256, so a site
        downloads each file once. The other hosts set huggingFace.endpoint to it. The Hub's
        own answers are never cached: it authorizes every request, token by token
      '';
      listen = mkOption {
        type = types.listOf types.str;
        default = mf.siteCacheDefaults.listen;
        example = [ "10.0.0.5:8080" ];
        description = "nginx `listen` values of the cache (plain http on the site's network).";
      };
      upstream = mkOption {
        type = types.str;
        default = mf.siteCacheDefaults.upstream;
        description = "The Hub the cache stands in front of: scheme://host[:port], no path.";
      };
      cacheDir = mkOption {
        type = types.path;
        default = mf.siteCacheDefaults.cacheDir;
        description = "Where nginx keeps the CDN's bytes (created for the nginx user).";
      };
      maxSize = mkOption {
        type = types.str;
        default = mf.siteCacheDefaults.maxSize;
        example = "2t";
        description = "nginx's max_size of the cache: the least recently used slices go first.";
      };
      inactive = mkOption {
        type = types.str;
        default = mf.siteCacheDefaults.inactive;
        description = "Slices not read for this long are removed (nginx's inactive=).";
      };
      sliceSize = mkOption {
        type = types.str;
        default = mf.siteCacheDefaults.sliceSize;
        description = "The unit nginx fetches, caches and locks (its slice module).";
      };
      resolvers = mkOption {
        type = types.listOf types.str;
        default = mf.siteCacheDefaults.resolvers;
        example = [ "127.0.0.53" ];
        description = ''
          DNS servers nginx asks for the CDN hosts the Hub redirects to (nginx resolves them
          per request, not with the system resolver). Needed for the real Hub.
        '';
      };
      caFile = mkOption {
        type = types.str;
        default = mf.siteCacheDefaults.caFile;
        description = "The CA bundle nginx checks the Hub's and the CDN's certificates against.";
      };
    };

    user = mkOption {
      type = types.nullOr types.str;
      default = defaults.user;
      example = mf.ownUser;
      description = ''
        A static user for the service; `null` runs it with DynamicUser=, its files in
        /var/lib/private and readable through `consumers`. `"${mf.ownUser}"` is created by the
        module (a system user in `group`); any other name must be an existing account, which
        the module does not define or change. The service runs with Group=`group` either way.
      '';
    };

    group = mkOption {
      type = types.str;
      default = defaults.group;
      description = ''
        The group that owns the published files (0640, directories 0750); created by the
        module. Services that read models join it (`consumers` does that).
      '';
    };

    settings = mkOption {
      type = (pkgs.formats.json { }).type;
      default = defaults.settings;
      example = { max_parallel_models = 4; stall_timeout = "1m"; keep_previous = 2; };
      description = ''
        Further keys of the daemon's config file (README.md, "The config file"), merged over
        the ones the options above set; a `null` leaves a key at the daemon's default. Never
        `token_file`: use huggingFace.tokenFile.

        Among them, what happens to versions no longer deployed: `keep_previous` (default 1)
        versions are kept per model besides the published one, so a
        `nixos-rebuild switch --rollback` to the previous index publishes from disk without a
        download; `0` keeps none. `prune` (default true): remove, after every pass and reload,
        what is neither deployed nor kept (only what models-fetch wrote), and give kept
        versions back when a download would otherwise be refused for lack of space; `false`
        removes nothing automatically (`models-fetch gc` still does).
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Check the config file and the index with `models-fetch plan` at build time (skipped
        when the build platform cannot run the host's binary).
      '';
    };

    consumers = mkOption {
      type = types.attrsOf (types.submodule consumerModule);
      default = defaults.consumers;
      example = literalExpression ''{ llm-server.models = [ "ajna-insight-v2" ]; }'';
      description = ''
        systemd services that read models: each waits for models-fetch.service and its
        models (`models-fetch wait` in ExecStartPre), joins `group`, sees the models
        read-only even with DynamicUser=, and gets INIXOS_MODEL_*, HF_HUB_CACHE,
        HUGGINGFACE_HUB_CACHE (which TGI and text-embeddings-inference read) and
        HF_HUB_OFFLINE=1 (with mkDefault: the service's own values win).
      '';
    };
  };

  config = lib.mkMerge [
    (lib.mkIf cfg.siteCache.enable {
      inherit (siteCacheChecks) assertions warnings;
      services.nginx = {
        enable = true;
        # One text for NixOS and for packaging/nginx-site-cache.conf: nix/lib.nix renders both.
        appendHttpConfig = mf.siteCacheConfig siteCacheSettings;
      };
      systemd.tmpfiles.rules = [
        "d ${toString sc.cacheDir} 0750 ${config.services.nginx.user} ${config.services.nginx.group} - -"
      ];
      systemd.services.nginx.serviceConfig.ReadWritePaths =
        lib.mkIf (!lib.hasPrefix "${nginxCache}/" (toString sc.cacheDir)) [ (toString sc.cacheDir) ];
    })

    (lib.mkIf cfg.enable (lib.mkMerge [
      {
        inherit (evaluated) assertions warnings;
        environment.variables = evaluated.environment;
        environment.etc."models-fetch/index.json".source = indexFile;
        users.groups.${cfg.group} = { };
      }

      (lib.mkIf cfg.huggingFace.enable {
        # `models-fetch status` and `wait` read it by default.
        environment.etc."models-fetch/config.json".source = configFile;
        environment.systemPackages = [ cfg.package ];

        users.users = evaluated.users;
        systemd.tmpfiles.rules = evaluated.tmpfiles;

        systemd.services = lib.mkMerge [
          {
            models-fetch = {
              inherit (evaluated.unit) description wants after wantedBy unitConfig serviceConfig;
              # SIGHUP, not a restart, when only the config or the index changed.
              reloadTriggers = [ configFile indexFile ];
            };
          }
          # With their priorities (mkDefault, mkBefore) as nix/lib.nix sets them.
          evaluated.consumers
        ];
      })
    ]))
  ];
}

# Test cases for nix/lib.nix, the NixOS module's logic. Evaluated by tests/it/nix.rs with
# `nix-instantiate --eval --strict --json` (no nixpkgs needed), which checks:
#   checks      every `got` equals its `want`;
#   cases       `refusedBy` lists substrings each of which some failed assertion must contain
#               ([ ] = the case must pass every assertion); `daemon` says what the module's
#               build-time check (`check`: `models-fetch plan` on the rendered JSON) must do:
#               "accepts", { refuses = "part of its message"; } (the daemon's exit 78, its
#               message and the module's note naming the options), or null (a rule of the
#               module only, or a config the module never deploys); `json` must hold
#               exactly `settings`, nulls left out;
#   keys        with the daemon's own list of keys, every one is covered, none unknown;
#   shared      values the daemon computes too: fetch-model.nix's URLs and the deploy order
#               for hostile file names, and the stub fields fetch-model.nix refuses;
#   units       rendered unit files, compared with packaging/models-fetch.service.
let
  mf = import ../../nix/lib.nix;
  examples = ../../examples/index.json;
  seed = ../../nix/index.json;
  edge = ./edge-index.json;
  hostile = ./hostile-names.json;
  fileSetIndex = ./file-set-index.json;
  # nixpkgs' fetchurl and runCommand as data: their arguments, a store path of their own, and
  # passthru lifted onto the result as mkDerivation does.
  fetchModel = import ../../nix/fetch-model.nix {
    fetchurl = args: args // { outPath = "/fetched/${args.name}"; };
    runCommand = name: env: script: env // env.passthru or { } // { inherit name script; outPath = "/built/${name}"; };
  };
  lines = s: builtins.filter builtins.isString (builtins.split "\n" s);
  # The lines of a build script that make links or write a file.
  linksOf = script: builtins.filter (l: builtins.match "(ln -s|printf) .*" l != null) (lines script);
  refusedBy = indexPath: id: !(builtins.tryEval (fetchModel { inherit id indexPath; }).name).success;
  fileSetEntry = id: builtins.head (builtins.filter (e: e.id == id) (builtins.fromJSON (builtins.readFile fileSetIndex)).models);
  shaOf = id: path: (builtins.head (builtins.filter (f: f.path == path) (fileSetEntry id).artifact.files)).sha256;

  # The paths a test host has: the daemon as packaging/ installs it, and each case's own
  # index named by its real path (so `models-fetch plan` can read it). `own` is each
  # consumer's serviceConfig of its own; the consumers' units are what NixOS merges: the
  # service's own values over the module's mkDefault ones.
  runWith = own: cfg:
    let
      full = mf.withDefaults cfg;
      r = mf.evaluate {
        cfg = full;
        exe = "/usr/bin/models-fetch";
        kill = "/bin/kill";
        indexFile = toString full.indexPath;
        services = builtins.mapAttrs
          (name: _: {
            serviceConfig = {
              ExecStart = "/usr/bin/${name}";
              TimeoutStartSec = r.consumers.${name}.serviceConfig.TimeoutStartSec.content;
            } // own.${name} or { };
          })
          full.consumers;
      };
    in
    r;
  run = runWith { };

  good = {
    indexPath = examples;
    huggingFace.enable = true;
    deployedModels = [ "anahata-heart-v1" ];
    chakraModels.ajna = [ "ajna-insight-v2" ];
  };

  case = name: cfg: refusedBy: daemon:
    let r = run cfg; in
    {
      inherit name refusedBy daemon;
      inherit (r) json settings failedAssertions;
      # As module.nix runs it, with the binary and the file from the test's environment.
      check = r.checkCommand { exe = "\"$MODELS_FETCH\""; config = "\"$CONFIG\""; };
    };

  # Every daemon key the typed options do not set, through `settings`.
  everyOtherKey = {
    mirrors_first = true;
    proxy = "http://proxy.example:3128";
    ca_file = "/etc/ssl/extra.pem";
    connect_timeout = "5s";
    stall_timeout = "1m";
    min_rate = "4KiB";
    min_rate_window = "30s";
    max_retries = 3;
    retry_base_delay = "2s";
    retry_max_time = "5m";
    max_parallel_models = 4;
    max_parallel_files = 3;
    connections_per_file = 2;
    chunk_size = "16MiB";
    max_connections_per_host = 6;
    recheck_interval = "1h 30m";
    rehash_interval = "7d";
    metrics_file = "/var/lib/models/.models-fetch/metrics.prom";
    keep_previous = 2;
    prune = false;
  };

  customStore = run (good // {
    modelStorePath = "/srv/models";
    huggingFace = { enable = true; cacheDir = "/srv/models/hf-cache"; };
    user = "models-fetch";
  });
  cacheApart = run (good // {
    huggingFace = { enable = true; cacheDir = "/var/lib/hf-cache"; };
    consumers.inference.models = [ "ajna-insight-v2" ];
  });
  consumers = run (good // {
    consumers = {
      inference = { models = [ "ajna-insight-v2" ]; };
      batch = { timeoutSec = null; };
    };
  });
  staticConsumers = run (good // {
    user = "models-fetch";
    consumers.inference.models = [ "ajna-insight-v2" ];
  });
  existingUser = run (good // {
    user = "alice";
    modelStorePath = "/srv/models";
    huggingFace = { enable = true; cacheDir = "/srv/models/hf-cache"; };
  });

  # The warnings for one consumer `llm` whose own TimeoutStartSec is `value` (null: none of
  # its own), waiting `timeoutSec`.
  timeoutWarnings = timeoutSec: value:
    (runWith (if value == null then { } else { llm.TimeoutStartSec = value; })
      (good // { consumers.llm = { inherit timeoutSec; }; })).warnings;

  # fetch-model.nix and the daemon over hostile file names: every entry but the stub, from
  # deployedModels and chakraModels (one twice), on an endpoint with a path and a slash.
  hostileIndex = builtins.fromJSON (builtins.readFile hostile);
  hostileIds = builtins.filter (id: id != "hostile-stub-v1") (map (e: e.id) hostileIndex.models);
  hostileEndpoint = "http://hub.internal:8080/hf/";
  hostileRun = run {
    indexPath = hostile;
    huggingFace = { enable = true; endpoint = hostileEndpoint; };
    deployedModels = builtins.genList (i: builtins.elemAt hostileIds (i * 2)) 9;
    chakraModels.soma = hostileIds;
  };

  # Each stub entry as fetch-model.nix sees it: refused, naming the fields the daemon names.
  stubsOf = index: ids: map
    (id: {
      inherit id;
      index = toString index;
      fields = map mf.showStub (mf.stubFields (builtins.head (builtins.filter (e: e.id == id)
        (builtins.fromJSON (builtins.readFile index)).models)));
      refused = !(builtins.tryEval (fetchModel { inherit id; indexPath = index; }).url).success;
    })
    ids;

  unitFor = cfg: mf.renderUnit (mf.evaluate {
    cfg = mf.withDefaults cfg;
    exe = "/usr/bin/models-fetch";
    kill = "/bin/kill";
    configFile = "/etc/models-fetch/config.toml";
  }).unit;

  # Mirrors as the module's option holds them: a URL, a table with credentials, one without.
  mirrorsWithCredentials = [
    "https://plain.example/by-sha256"
    { url = "https://private.example/models"; credentialsFile = "/run/secrets/mirror"; auth = "basic"; }
    { url = "https://open.example/models"; credentialsFile = null; auth = "bearer"; }
  ];
  withMirrorCredentials = run (good // {
    mirrors = mirrorsWithCredentials;
    huggingFace = { enable = true; tokenFile = "/run/secrets/hf"; };
  });

  override = content: { _type = "override"; priority = 1000; inherit content; };
  order = content: { _type = "order"; priority = 500; inherit content; };
in
{
  cases = [
    # Good: the example index with a deploy set from both lists, then every other daemon key.
    (case "good" good [ ] "accepts")
    (case "good-every-key"
      (good // {
        mirrors = [ "https://mirror.example/models" "file:///srv/mirror" ];
        verifyChecksums = false;
        huggingFace = { enable = true; endpoint = "http://hub.internal:8080"; };
        settings = everyOtherKey // { chakra_models.anahata = [ "anahata-heart-v1" ]; };
      }) [ ] "accepts")
    (case "good-mirror-credentials" (good // { mirrors = mirrorsWithCredentials; }) [ ] "accepts")
    (case "good-seed-index-empty-deploy-set" { } [ ] null)
    (case "good-edge-public-hub"
      {
        indexPath = edge;
        huggingFace.enable = true;
        chakraModels = { soma = [ "public-hub-v1" ]; vishuddha = [ "pr-revision-v1" ]; };
      } [ ] "accepts")
    (case "good-null-settings" (good // { settings = { proxy = null; chakra_models.soma = null; }; }) [ ] "accepts")

    # The daemon's rules: the module's assertions pass, its build-time check refuses with the
    # daemon's message (and names the options).
    (case "unknown-id" (good // { deployedModels = [ "xyz" ]; })
      [ ]
      { refuses = "Model 'xyz' not found in index (known ids: ajna-insight-v2, anahata-heart-v1)"; })
    (case "unknown-id-empty-index" (good // { indexPath = ../index/valid/empty-models.json; chakraModels = { }; })
      [ ]
      { refuses = "Model 'anahata-heart-v1' not found in index (the index has no models)"; })
    (case "wrong-chakra" (good // { chakraModels.anahata = [ "ajna-insight-v2" ]; })
      [ ]
      { refuses = "Model 'ajna-insight-v2' is listed under chakra_models.anahata but its index entry says chakra 'ajna'; move it to chakra_models.ajna"; })
    (case "not-a-chakra" (good // { chakraModels.heart = [ "anahata-heart-v1" ]; })
      [ ]
      { refuses = "chakra_models.heart: 'heart' is not a chakra (one of: muladhara, svadhisthana, manipura, anahata, vishuddha, ajna, sahasrara, soma, jnana)"; })
    (case "stub" { indexPath = seed; huggingFace.enable = true; chakraModels.muladhara = [ "muladhara-foundation-v1" ]; }
      [ ]
      { refuses = "Model 'muladhara-foundation-v1' is a stub entry and cannot be deployed; replace the placeholder values of: dataset.id (contains TODO-STUB)"; })
    (case "no-source" { indexPath = edge; huggingFace.enable = true; deployedModels = [ "nosource-v1" ]; }
      [ ]
      { refuses = "Model 'nosource-v1': it has no source"; })
    (case "reserved-id" { indexPath = edge; huggingFace.enable = true; deployedModels = [ "by-chakra" ]; }
      [ ]
      { refuses = "Model 'by-chakra': the id names a folder models-fetch uses inside store_dir"; })
    (case "nothing-listed" { indexPath = examples; huggingFace.enable = true; }
      [ ]
      { refuses = "nothing to deploy: deployed_models and chakra_models are both empty"; })
    # The typed options cannot know every daemon key; the daemon refuses a typo.
    (case "settings-typo" (good // { settings.deployed_model = [ "anahata-heart-v1" ]; })
      [ ]
      { refuses = "deployed_model: unknown field `deployed_model`"; })
    (case "settings-wrong-type" (good // { settings.stall_timeout = 30; })
      [ ]
      { refuses = "stall_timeout: invalid type: integer `30`, expected a duration"; })

    # The module's own rules: each assertion fires, naming what to change.
    (case "hugging-face-off" (good // { huggingFace.enable = false; })
      [ "models are listed (anahata-heart-v1, ajna-insight-v2) but services.models.huggingFace.enable is false" ]
      null)
    (case "token-in-store" (good // { huggingFace = { enable = true; tokenFile = "${builtins.storeDir}/0000000000000000000000000000000a-hf-token"; }; })
      [ "services.models.huggingFace.tokenFile = \"${builtins.storeDir}/0000000000000000000000000000000a-hf-token\" is inside ${builtins.storeDir}" ]
      null)
    (case "mirror-credentials-in-store" (good // { mirrors = [{ url = "https://m.example"; credentialsFile = "${builtins.storeDir}/0000000000000000000000000000000b-mirror"; auth = "bearer"; }]; })
      [ "services.models.mirrors: the credentialsFile \"${builtins.storeDir}/0000000000000000000000000000000b-mirror\" is inside ${builtins.storeDir}" ]
      null)
    (case "mirror-credentials-relative" (good // { mirrors = [{ url = "https://m.example"; credentialsFile = "secrets/m"; auth = "bearer"; }]; })
      [ "services.models.mirrors: the credentialsFile \"secrets/m\" must be an absolute path." ]
      null)
    (case "token-relative" (good // { huggingFace = { enable = true; tokenFile = "secrets/hf-token"; }; })
      [ "must be an absolute path" ]
      null)
    (case "token-file-in-settings" (good // { settings.token_file = "/run/secrets/hf-token"; })
      [ "services.models.settings.token_file: set services.models.huggingFace.tokenFile instead" ]
      null)
    (case "custom-store-dynamic-user" (good // { modelStorePath = "/srv/models"; })
      [ "services.models: /srv/models lies outside /var/lib" "set services.models.user (\"models-fetch\", which the module creates, or an existing account)" ]
      null)
    (case "store-trailing-slash" (good // { modelStorePath = "/var/lib/models/"; })
      [ "services.models.modelStorePath = \"/var/lib/models/\" must be an absolute path" ]
      null)
    (case "consumer-model-not-deployed" (good // { consumers.inference.models = [ "muladhara-foundation-v1" ]; })
      [ "services.models.consumers.inference.models: 'muladhara-foundation-v1' is not deployed (deployed: anahata-heart-v1, ajna-insight-v2)" ]
      null)
    (case "consumer-without-daemon" { indexPath = examples; consumers.inference = { }; }
      [ "services.models.consumers.inference: consumers wait for models-fetch.service" ]
      null)
    {
      name = "consumer-runs-nothing";
      refusedBy = [ "services.models.consumers.inference: systemd.services.inference runs nothing (no script or ExecStart)" ];
      daemon = null;
      inherit (mf.evaluate { cfg = mf.withDefaults (good // { consumers.inference = { }; }); exe = "x"; kill = "k"; })
        json settings failedAssertions;
      check = "";
    }
  ];

  checks = [
    {
      name = "chakras come from the schema";
      got = mf.chakras;
      want = [ "muladhara" "svadhisthana" "manipura" "anahata" "vishuddha" "ajna" "sahasrara" "soma" "jnana" ];
    }
    {
      name = "the exact file for the good case";
      got = (run good).json;
      want = ''{"cache_dir":"/var/lib/models/hf-cache","chakra_models":{"ajna":["ajna-insight-v2"]},"deployed_models":["anahata-heart-v1"],"endpoint":"https://huggingface.co","index":"${toString examples}","mirrors":[],"store_dir":"/var/lib/models","verify_checksums":true}'';
    }
    {
      name = "the module names the index and the config at their stable /etc paths";
      got =
        let r = mf.evaluate { cfg = mf.withDefaults good; exe = "x"; kill = "k"; }; in
        { inherit (r.settings) index; inherit (r.unit.serviceConfig) ExecStart; };
      want = { index = "/etc/models-fetch/index.json"; ExecStart = "x run --config /etc/models-fetch/config.json"; };
    }
    {
      name = "deploy set: deployedModels, then every chakraModels list, each id once";
      got = (run (good // { chakraModels = { ajna = [ "ajna-insight-v2" ]; anahata = [ "anahata-heart-v1" ]; }; })).deploySet;
      want = [ "anahata-heart-v1" "ajna-insight-v2" ];
    }
    {
      name = "settings are merged on top, tables one level deep";
      got = (run (good // { settings = { chakra_models.anahata = [ "anahata-heart-v1" ]; endpoint = "http://127.0.0.1:1"; }; })).settings.chakra_models;
      want = { ajna = [ "ajna-insight-v2" ]; anahata = [ "anahata-heart-v1" ]; };
    }
    {
      name = "the file leaves nulls out (the daemon's default), in tables too, and names paths as strings";
      got = builtins.fromJSON (run (good // { settings = { proxy = null; chakra_models.soma = null; ca_file = ./edge-index.json; }; })).json;
      want = builtins.fromJSON (run good).json // { ca_file = toString ./edge-index.json; };
    }
    {
      name = "never a token_file key, even with a tokenFile";
      got = (run (good // { huggingFace = { enable = true; tokenFile = "/run/secrets/hf"; }; })).settings ? token_file;
      want = false;
    }
    {
      name = "the build-time check names the option of every key the typed options write";
      got = builtins.attrNames mf.optionOfKey;
      want = builtins.attrNames (run good).settings;
    }
    {
      name = "stub fields of the seed entry";
      got = map (s: s.pointer) (mf.stubFields (builtins.head (builtins.fromJSON (builtins.readFile seed)).models));
      want = [
        "/artifact/downloadUrl"
        "/artifact/sha256"
        "/artifact/sizeBytes"
        "/dataset/id"
        "/dataset/url"
        "/provenance/runId"
        "/training/command"
        "/training/repo"
      ];
    }
    {
      name = "stub rules: prefixes anywhere, the zero rules only on their field";
      got = mf.stubFields {
        a = "STUB: x";
        b = [ "ok" "REVISIT: later" ];
        c = { "x/y" = "TODO-STUB"; };
        geometry.dimensions = 0;
        artifact = { sizeBytes = 0; sha256 = "0000000000000000000000000000000000000000000000000000000000000000"; };
        dataset.commit = "0000000000000000000000000000000000000000000000000000000000000000";
      };
      want = [
        { pointer = "/a"; reason = "starts with STUB:"; }
        { pointer = "/artifact/sha256"; reason = "is all zeros"; }
        { pointer = "/artifact/sizeBytes"; reason = "is 0"; }
        { pointer = "/b/1"; reason = "starts with REVISIT:"; }
        { pointer = "/c/x~1y"; reason = "contains TODO-STUB"; }
      ];
    }
    {
      name = "percent-encoding: a one-byte string for each of the 242 bytes UTF-8 text holds; every byte outside A-Za-z0-9-._~ as %XX";
      got = { inherit (mf) byteCount; encoded = map mf.encodeSegment [ "a b+c=d#e%f?g&h/i" "ü" "日本" "🤗" "~._-AZaz09" ]; };
      want = {
        byteCount = 242;
        encoded = [ "a%20b%2Bc%3Dd%23e%25f%3Fg%26h%2Fi" "%C3%BC" "%E6%97%A5%E6%9C%AC" "%F0%9F%A4%97" "~._-AZaz09" ];
      };
    }
    {
      name = "source URLs (fetch-model.nix): repo, downloadUrl on the public Hub follows endpoint, other URLs as they are";
      got = map (mf.sourceUrl "http://hub.internal") ((builtins.fromJSON (builtins.readFile edge)).models ++ (builtins.fromJSON (builtins.readFile examples)).models);
      want = [
        "http://hub.internal/test-org/by-chakra/resolve/main/by-chakra.bin"
        null
        "http://hub.internal/test-org/public/resolve/main/model.safetensors"
        "http://hub.internal/test-org/pr/resolve/refs%2Fpr%2F1/sub%20dir/weights.gguf"
        "http://hub.internal/example-org/ajna-insight/resolve/main/ajna-insight-v2.safetensors"
        "https://models.example.org/anahata/anahata-heart-v1.safetensors"
      ];
    }
    {
      name = "fetch-model.nix: fetchurl gets the URL, a store name and the entry's sha256; stubs and unknown ids are refused";
      got =
        let
          fetched = fetchModel { id = "pr-revision-v1"; indexPath = edge; endpoint = "http://hub.internal"; };
          refused = id: !(builtins.tryEval (fetchModel { inherit id; indexPath = edge; }).url).success;
        in
        {
          inherit (fetched) url name sha256;
          id = fetched.passthru.entry.id;
          stub = !(builtins.tryEval (fetchModel { id = "muladhara-foundation-v1"; }).url).success;
          noSource = refused "nosource-v1";
          unknown = refused "xyz";
        };
      want = {
        url = "http://hub.internal/test-org/pr/resolve/refs%2Fpr%2F1/sub%20dir/weights.gguf";
        name = "weights.gguf";
        sha256 = "4444444444444444444444444444444444444444444444444444444444444444";
        id = "pr-revision-v1";
        stub = true;
        noSource = true;
        unknown = true;
      };
    }
    {
      name = "consumers get HUGGINGFACE_HUB_CACHE at the priority of HF_HUB_CACHE (mkDefault: the service's own value wins), pointing at the cache";
      got = { inherit (cacheApart.consumers.inference.environment) HF_HUB_CACHE HUGGINGFACE_HUB_CACHE; };
      want = { HF_HUB_CACHE = override "/var/lib/hf-cache"; HUGGINGFACE_HUB_CACHE = override "/var/lib/hf-cache"; };
    }
    {
      name = "fetch-model.nix, a set of files: one fixed-output fetch per content at {endpoint}/{repo}/resolve/{commit}/{path}, the folder links every path to its fetch";
      got =
        let m = fetchModel { id = "set-hostile-v1"; indexPath = fileSetIndex; endpoint = "http://hub.internal/"; }; in
        {
          inherit (m) name preferLocalBuild allowSubstitutes;
          id = m.passthru.entry.id;
          fetches = builtins.mapAttrs (_: f: { inherit (f) url sha256 name; }) m.passthru.files;
          links = linksOf m.script;
        };
      want = {
        name = "set-hostile-v1";
        preferLocalBuild = true;
        allowSubstitutes = false;
        id = "set-hostile-v1";
        fetches = {
          ".gitattributes" = { url = "http://hub.internal/test-org/set/resolve/1111111111111111111111111111111111111111/.gitattributes"; sha256 = shaOf "set-hostile-v1" ".gitattributes"; name = "_.gitattributes"; };
          "a/b/c/deep.bin" = { url = "http://hub.internal/test-org/set/resolve/1111111111111111111111111111111111111111/a/b/c/deep.bin"; sha256 = shaOf "set-hostile-v1" "a/b/c/deep.bin"; name = "deep.bin"; };
          "config.json" = { url = "http://hub.internal/test-org/set/resolve/1111111111111111111111111111111111111111/config.json"; sha256 = shaOf "set-hostile-v1" "config.json"; name = "config.json"; };
          # Same content, one fetch: the first file's.
          "same-a.txt" = { url = "http://hub.internal/test-org/set/resolve/1111111111111111111111111111111111111111/same-a.txt"; sha256 = shaOf "set-hostile-v1" "same-a.txt"; name = "same-a.txt"; };
          "same-b.txt" = { url = "http://hub.internal/test-org/set/resolve/1111111111111111111111111111111111111111/same-a.txt"; sha256 = shaOf "set-hostile-v1" "same-a.txt"; name = "same-a.txt"; };
          "sub dir/ü+=#%?.json" = { url = "http://hub.internal/test-org/set/resolve/1111111111111111111111111111111111111111/sub%20dir/%C3%BC%2B%3D%23%25%3F.json"; sha256 = shaOf "set-hostile-v1" "sub dir/ü+=#%?.json"; name = "-+=-?.json"; };
        };
        links = [
          "ln -s /fetched/_.gitattributes \"$out\"/'.gitattributes'"
          "ln -s /fetched/deep.bin \"$out\"/'a/b/c/deep.bin'"
          "ln -s /fetched/config.json \"$out\"/'config.json'"
          "ln -s /fetched/same-a.txt \"$out\"/'same-a.txt'"
          "ln -s /fetched/same-a.txt \"$out\"/'same-b.txt'"
          "ln -s /fetched/-+=-?.json \"$out\"/'sub dir/ü+=#%?.json'"
        ];
      };
    }
    {
      name = "fetch-model.nix, a set's Hub cache: models--{org}--{name}/blobs/{sha256}, snapshots/{commit}/{path} relative links to the blobs, refs/{revision} written last";
      got =
        let m = fetchModel { id = "set-hostile-v1"; indexPath = fileSetIndex; endpoint = "http://hub.internal/"; }; in
        { inherit (m.hubCache) name preferLocalBuild; links = linksOf m.hubCache.script; };
      want =
        let
          sha = shaOf "set-hostile-v1";
          repo = "\"$out\"/'models--test-org--set'";
          snapshot = "${repo}/snapshots/1111111111111111111111111111111111111111";
          blobs = builtins.sort (a: b: a.sha < b.sha) [
            { sha = sha ".gitattributes"; name = "_.gitattributes"; }
            { sha = sha "a/b/c/deep.bin"; name = "deep.bin"; }
            { sha = sha "config.json"; name = "config.json"; }
            { sha = sha "same-a.txt"; name = "same-a.txt"; }
            { sha = sha "sub dir/ü+=#%?.json"; name = "-+=-?.json"; }
          ];
        in
        {
          name = "hub-cache-set-hostile-v1";
          preferLocalBuild = true;
          links = map (b: "ln -s /fetched/${b.name} ${repo}/blobs/${b.sha}") blobs ++ [
            "ln -s '../../blobs/${sha ".gitattributes"}' ${snapshot}/'.gitattributes'"
            "ln -s '../../../../../blobs/${sha "a/b/c/deep.bin"}' ${snapshot}/'a/b/c/deep.bin'"
            "ln -s '../../blobs/${sha "config.json"}' ${snapshot}/'config.json'"
            "ln -s '../../blobs/${sha "same-a.txt"}' ${snapshot}/'same-a.txt'"
            "ln -s '../../blobs/${sha "same-a.txt"}' ${snapshot}/'same-b.txt'"
            "ln -s '../../../blobs/${sha "sub dir/ü+=#%?.json"}' ${snapshot}/'sub dir/ü+=#%?.json'"
            "printf %s 1111111111111111111111111111111111111111 > ${repo}/refs/'refs/pr/1'"
          ];
        };
    }
    {
      name = "fetch-model.nix, a set from a resolve-form downloadUrl on the public Hub: fetched at the commit on `endpoint`; a 40-hex revision writes refs/main";
      got =
        let m = fetchModel { id = "set-via-url-v1"; indexPath = fileSetIndex; endpoint = "http://hub.internal"; }; in
        { url = m.passthru.files."model.gguf".url; ref = builtins.elemAt (linksOf m.hubCache.script) 2; };
      want = {
        url = "http://hub.internal/test-org/via-url/resolve/2222222222222222222222222222222222222222/model.gguf";
        ref = "printf %s 2222222222222222222222222222222222222222 > \"$out\"/'models--test-org--via-url'/refs/'main'";
      };
    }
    {
      name = "fetch-model.nix refuses a set it cannot fetch safely: no commit, unsafe or repeated paths (no daemon to ask)";
      got = {
        noCommit = refusedBy ../index/invalid/file-set-without-commit.json "ajna-set-v1";
        unsafe = refusedBy ../index/invalid/file-set-unsafe-paths.json "ajna-set-v1";
        repeated = refusedBy ../index/invalid/file-set-duplicate-path.json "ajna-set-v1";
        fine = refusedBy fileSetIndex "set-hostile-v1";
        problems = mf.fileSetProblems "https://huggingface.co"
          (builtins.head (builtins.fromJSON (builtins.readFile ../index/invalid/file-set-unsafe-paths.json)).models);
      };
      want = {
        noCommit = true;
        unsafe = true;
        repeated = true;
        fine = false;
        problems = [
          "artifact.files.7 (../escape.json): \"../escape.json\" has a \"..\" segment"
          "artifact.files.8 (/etc/passwd): \"/etc/passwd\" is absolute"
          "artifact.files.9 (2_Dense//config.json): \"2_Dense//config.json\" has an empty segment (\"//\" or a trailing \"/\")"
        ];
      };
    }
    {
      name = "unsafe paths, for the reasons src/index/checks.rs gives (its unit test's list)";
      got = map mf.unsafePathReason [ "" "/etc/passwd" "a/../b" ".." "a//b" "a/" "./a" "a\\b" "a\nb" "a\tb" (builtins.fromJSON "\"a\\u0085b\"") (builtins.concatStringsSep "" (builtins.genList (_: "x") 256)) "model.safetensors" "sub/dir/model.gguf" "refs/pr/1" "a..b" "ünïcode" ];
      want = [
        "is empty"
        "is absolute"
        "has a \"..\" segment"
        "has a \"..\" segment"
        "has an empty segment (\"//\" or a trailing \"/\")"
        "has an empty segment (\"//\" or a trailing \"/\")"
        "has a \".\" segment"
        "contains a backslash"
        "contains a control character"
        "contains a control character"
        "contains a control character"
        "has a segment longer than 255 bytes"
        null
        null
        null
        null
        null
      ];
    }
    {
      name = "default directories: one StateDirectory, no tmpfiles, no ReadWritePaths";
      got = { inherit (run good) stateDirectories customDirs tmpfiles; };
      want = { stateDirectories = [ "models" ]; customDirs = [ ]; tmpfiles = [ ]; };
    }
    {
      name = "a store outside /var/lib: ReadWritePaths and a tmpfiles rule for the static user";
      got = {
        inherit (customStore) tmpfiles failedAssertions;
        inherit (customStore.unit.serviceConfig) ReadWritePaths User;
        state = customStore.unit.serviceConfig ? StateDirectory;
        dynamic = customStore.unit.serviceConfig ? DynamicUser;
      };
      want = {
        tmpfiles = [ "d /srv/models 0750 models-fetch models - -" ];
        failedAssertions = [ ];
        ReadWritePaths = [ "/srv/models" ];
        User = "models-fetch";
        state = false;
        dynamic = false;
      };
    }
    {
      name = "user: the module creates only its own name (a system user in group); an existing account is used as it is; none with DynamicUser";
      got = {
        own = customStore.users;
        existing = { inherit (existingUser) users tmpfiles failedAssertions; inherit (existingUser.unit.serviceConfig) User Group; };
        dynamic = (run good).users;
      };
      want = {
        own.models-fetch = { isSystemUser = true; group = "models"; };
        existing = {
          users = { };
          tmpfiles = [ "d /srv/models 0750 alice models - -" ];
          failedAssertions = [ ];
          User = "alice";
          Group = "models";
        };
        dynamic = { };
      };
    }
    {
      name = "a cache apart from the store: two StateDirectories, both bound into consumers";
      got = {
        inherit (cacheApart.unit.serviceConfig) StateDirectory;
        inherit (cacheApart.consumers.inference.serviceConfig) BindReadOnlyPaths;
        inherit (cacheApart) failedAssertions;
      };
      want = {
        StateDirectory = [ "models" "hf-cache" ];
        BindReadOnlyPaths = [ "/var/lib/private/models" "/var/lib/private/hf-cache" ];
        failedAssertions = [ ];
      };
    }
    {
      name = "mirror credentials: LoadCredential=mirror-<n> beside hf-token, the config names the credential, never the file";
      got = {
        inherit (withMirrorCredentials.unit.serviceConfig) LoadCredential;
        inherit (withMirrorCredentials.settings) mirrors;
        inherit (withMirrorCredentials) failedAssertions;
      };
      want = {
        LoadCredential = [ "hf-token:/run/secrets/hf" "mirror-2:/run/secrets/mirror" ];
        mirrors = [
          "https://plain.example/by-sha256"
          { url = "https://private.example/models"; credential = "mirror-2"; auth = "basic"; }
          "https://open.example/models"
        ];
        failedAssertions = [ ];
      };
    }
    {
      name = "site cache: packaging/nginx-site-cache.conf is what siteCacheConfig renders for the defaults";
      got = mf.siteCacheConfig mf.siteCacheDefaults;
      want = builtins.readFile ../../packaging/nginx-site-cache.conf;
    }
    {
      name = "site cache: the settings that change the text reach it; the key excludes the query";
      got =
        let
          text = mf.siteCacheConfig (mf.siteCacheDefaults // {
            listen = [ "10.0.0.5:8080" "[::]:8080" ];
            resolvers = [ "127.0.0.53" "10.0.0.1" ];
            sliceSize = "16m";
          });
          has = line: lines text != [ ] && builtins.elem line (map (l: builtins.head (builtins.match " *(.*)" l)) (lines text));
        in
        map has [
          "listen 10.0.0.5:8080;"
          "listen [::]:8080;"
          "resolver 127.0.0.53 10.0.0.1 valid=300s;"
          "slice 16m;"
          "proxy_cache_key \"sha256=$models_fetch_sha256 $slice_range\";"
          "proxy_pass_request_headers off;"
          "error_page 302 = @models_fetch_cdn;"
        ];
      want = [ true true true true true true true ];
    }
    {
      name = "site cache: an upstream with a path or without a scheme is refused; no resolver for a hostname is a warning";
      got = map
        (s: let c = mf.siteCacheChecks (mf.siteCacheDefaults // s); in { failed = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions); warned = builtins.length c.warnings; })
        [{ } { resolvers = [ "127.0.0.53" ]; } { upstream = "http://10.0.0.9:8080"; } { upstream = "https://hub.example/hf"; resolvers = [ "1.1.1.1" ]; } { upstream = "hub.example"; resolvers = [ "1.1.1.1" ]; listen = [ ]; }];
      want = [
        { failed = [ ]; warned = 1; }
        { failed = [ ]; warned = 0; }
        { failed = [ ]; warned = 0; }
        { failed = [ "services.models.siteCache.upstream = \"https://hub.example/hf\" must be scheme://host[:port] with no path: nginx would pass a decoded URI, and a revision's %2F would become \"/\"." ]; warned = 0; }
        {
          failed = [
            "services.models.siteCache.upstream = \"hub.example\" must be scheme://host[:port] with no path: nginx would pass a decoded URI, and a revision's %2F would become \"/\"."
            "services.models.siteCache.listen is empty; name at least one address:port for nginx to listen on."
          ];
          warned = 0;
        }
      ];
    }
    {
      name = "LoadCredential only with a tokenFile";
      got = [
        ((run good).unit.serviceConfig ? LoadCredential)
        (run (good // { huggingFace = { enable = true; tokenFile = "/run/secrets/hf"; }; })).unit.serviceConfig.LoadCredential
      ];
      want = [ false [ "hf-token:/run/secrets/hf" ] ];
    }
    {
      name = "consumers (DynamicUser): wants/after, the group, the private state bound read-only, the wait first, the variables and TimeoutStartSec with mkDefault";
      got = consumers.consumers;
      want = {
        batch = {
          wants = [ "models-fetch.service" ];
          after = [ "models-fetch.service" ];
          environment = builtins.mapAttrs (_: override) consumers.consumerEnvironment;
          serviceConfig = {
            SupplementaryGroups = [ "models" ];
            ExecStartPre = order [ "/usr/bin/models-fetch wait --config /etc/models-fetch/config.json" ];
            TimeoutStartSec = override "infinity";
            TemporaryFileSystem = [ "/var/lib/private" ];
            BindReadOnlyPaths = [ "/var/lib/private/models" ];
          };
        };
        inference = {
          wants = [ "models-fetch.service" ];
          after = [ "models-fetch.service" ];
          environment = builtins.mapAttrs (_: override) consumers.consumerEnvironment;
          serviceConfig = {
            SupplementaryGroups = [ "models" ];
            ExecStartPre = order [ "/usr/bin/models-fetch wait --config /etc/models-fetch/config.json --timeout 1800s ajna-insight-v2" ];
            TimeoutStartSec = override "1890s";
            TemporaryFileSystem = [ "/var/lib/private" ];
            BindReadOnlyPaths = [ "/var/lib/private/models" ];
          };
        };
      };
    }
    {
      name = "consumers of a static user: no bind mounts";
      got = staticConsumers.consumers.inference.serviceConfig;
      want = {
        SupplementaryGroups = [ "models" ];
        ExecStartPre = order [ "/usr/bin/models-fetch wait --config /etc/models-fetch/config.json --timeout 1800s ajna-insight-v2" ];
        TimeoutStartSec = override "1890s";
      };
    }
    {
      name = "mkDefault and mkBefore as data are nixpkgs' own (lib.mkOverride 1000, lib.mkOrder 500)";
      got = [ (mf.mkDefault "x") (mf.mkBefore [ "y" ]) ];
      want = [ (override "x") (order [ "y" ]) ];
    }
    {
      name = "environment: the seed's variables for everyone, plus the Hub cache (both names: TGI and TEI read HUGGINGFACE_HUB_CACHE) offline for consumers";
      got = { inherit (consumers) environment consumerEnvironment; };
      want = {
        environment = {
          INIXOS_MODEL_INDEX = toString examples;
          INIXOS_MODEL_STORE = "/var/lib/models";
          INIXOS_MODEL_CACHE = "/var/lib/models/hf-cache";
        };
        consumerEnvironment = {
          INIXOS_MODEL_INDEX = toString examples;
          INIXOS_MODEL_STORE = "/var/lib/models";
          INIXOS_MODEL_CACHE = "/var/lib/models/hf-cache";
          HF_HUB_CACHE = "/var/lib/models/hf-cache";
          HUGGINGFACE_HUB_CACHE = "/var/lib/models/hf-cache";
          HF_HUB_OFFLINE = "1";
        };
      };
    }
    {
      name = "systemd time spans: systemd's units, sums, fractions, plain seconds, infinity and 0";
      got = map mf.parseTimespan [ "2min" "90s" "1h 30min" "1h30min" 300 " 300 " "1.5h" "2 min" "5m" "1d" "2w" "500ms" "infinity" "0" "soon" "" "-5s" "1x" true ];
      want =
        (map (seconds: { infinite = false; inherit seconds; }) [ 120 90 5400 5400 300 300 5400.0 120 300 86400 1209600 0.5 ])
        ++ [{ infinite = true; } { infinite = true; } null null null null null];
    }
    {
      name = "TimeoutStartSec of the consumer's own: a warning naming both values when it is shorter than the wait, or unreadable";
      got = {
        own = timeoutWarnings 1800 null;
        short = timeoutWarnings 1800 "2min";
        unreadable = timeoutWarnings 1800 "soon";
        forEver = timeoutWarnings null "2h";
        barelyShort = timeoutWarnings 60 149;
        tooShortToLower = timeoutWarnings 1800 "1min";
        fine = map (timeoutWarnings 1800) [ "31min 30s" "1h" "infinity" "0" 7200 ];
        forEverFine = map (timeoutWarnings null) [ "infinity" "0" ];
      };
      want = {
        own = [ ];
        short = [ "systemd.services.llm.serviceConfig.TimeoutStartSec = \"2min\" is shorter than services.models.consumers.llm.timeoutSec (1800 s) + 90 s: systemd stops the start before `models-fetch wait` gives up. Raise it to \"1890s\" (or remove it: the module sets that), or lower services.models.consumers.llm.timeoutSec to at most 30." ];
        unreadable = [ "systemd.services.llm.serviceConfig.TimeoutStartSec = \"soon\" cannot be read as a systemd time span, so it cannot be checked against services.models.consumers.llm.timeoutSec (1800 s) + 90 s; systemd may stop the start before `models-fetch wait` gives up. Write it like \"30min\" or \"infinity\"." ];
        forEver = [ "systemd.services.llm.serviceConfig.TimeoutStartSec = \"2h\" is shorter than services.models.consumers.llm.timeoutSec = null (the wait has no limit): systemd stops the start before `models-fetch wait` gives up. Raise it to \"infinity\" (or remove it: the module sets that), or give services.models.consumers.llm.timeoutSec a limit." ];
        barelyShort = [ "systemd.services.llm.serviceConfig.TimeoutStartSec = 149 is shorter than services.models.consumers.llm.timeoutSec (60 s) + 90 s: systemd stops the start before `models-fetch wait` gives up. Raise it to \"150s\" (or remove it: the module sets that), or lower services.models.consumers.llm.timeoutSec to at most 59." ];
        tooShortToLower = [ "systemd.services.llm.serviceConfig.TimeoutStartSec = \"1min\" is shorter than services.models.consumers.llm.timeoutSec (1800 s) + 90 s: systemd stops the start before `models-fetch wait` gives up. Raise it to \"1890s\" (or remove it: the module sets that), or lower services.models.consumers.llm.timeoutSec." ];
        fine = [ [ ] [ ] [ ] [ ] [ ] ];
        forEverFine = [ [ ] [ ] ];
      };
    }
  ];

  # The daemon's keys as the module covers them: set by typed options, or only through
  # `settings` (each with an example value in the good-every-key case).
  keys = {
    typed = builtins.attrNames (run good).settings;
    viaSettings = builtins.attrNames everyOtherKey;
  };

  shared = {
    # `models-fetch plan --json` on `json` gives each id's URL in this order.
    urls = {
      inherit (hostileRun) json deploySet;
      fetchModel = map (id: { inherit id; inherit (fetchModel { inherit id; indexPath = hostile; endpoint = hostileEndpoint; }) url; }) hostileIds;
    };
    # `models-fetch plan` on each stub entry names the same fields.
    stubs = stubsOf seed [ "muladhara-foundation-v1" ] ++ stubsOf hostile [ "hostile-stub-v1" ];
  };

  # The unit for the default options, and with the token file packaging/ uses; the binary,
  # kill and the config at their packaging/ paths.
  units = {
    default = unitFor { };
    withToken = unitFor { huggingFace.tokenFile = "/etc/models-fetch/hf-token"; };
  };
}

# The logic of the NixOS module (`services.models`), in plain Nix that needs only `builtins`.
#
# module.nix declares the options and passes their values to `evaluate`; everything the module
# deploys (the daemon's config file, the unit, the consumer settings, the assertions, the
# warnings) comes from here. nixpkgs' `lib` is on no package registry, so CI cannot run the
# module system; it can evaluate this file for real (`nix-instantiate --eval --strict --json`,
# tests/nix/).
#
# Who owns which rule: what the daemon checks (the index's schema, unknown ids, chakra keys
# and listings, stub entries, sources, reserved ids, an empty deploy set, every config key)
# is checked by the daemon itself, at build time (checkConfig runs `models-fetch plan` on the
# generated file); this file only says which option each key comes from. It keeps what the
# daemon cannot see: the NixOS options, the directories a DynamicUser may own, the token
# file's place, the consumers and their units. Where Nix must compute a value the daemon
# computes too (nix/fetch-model.nix: the URL of a file, an entry's stub fields, the unsafe
# paths of a set of files), it does so as src/index/ does, and tests/it/nix.rs and
# tests/nix/cases.nix compare both.
let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    elem
    elemAt
    filter
    floor
    foldl'
    fromJSON
    genList
    head
    isAttrs
    isFloat
    isInt
    isList
    isString
    length
    listToAttrs
    mapAttrs
    match
    readFile
    replaceStrings
    split
    stringLength
    substring
    toJSON
    ;

  schema = fromJSON (readFile ./schema.json);

  # The chakra names, as the schema's enum lists them (never restated here).
  chakras = schema.definitions.entry.properties.chakra.enum;

  # --- small helpers (what nixpkgs' lib would give) ----------------------------------------
  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  hasSuffix = suffix: s:
    let n = stringLength s - stringLength suffix; in n >= 0 && substring n (-1) s == suffix;
  removePrefix = prefix: s:
    if hasPrefix prefix s then substring (stringLength prefix) (-1) s else s;
  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  concatMap = f: list: concatLists (map f list);
  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (attrNames attrs);
  filterAttrs = pred: attrs: listToAttrs (concatMap
    (name: optional (pred name attrs.${name}) { inherit name; value = attrs.${name}; })
    (attrNames attrs));
  optional = cond: x: if cond then [ x ] else [ ];
  optionalAttrs = cond: attrs: if cond then attrs else { };
  sublist = start: count: list: genList (i: elemAt list (start + i)) count;
  mod = a: b: a - a / b * b;
  lowerCase = replaceStrings
    [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  upperHex = replaceStrings [ "a" "b" "c" "d" "e" "f" ] [ "A" "B" "C" "D" "E" "F" ];
  quoteList = ids: concatStringsSep ", " ids;
  shellQuote = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";
  # Absolute path strings only: no empty, ".", ".." segments, no trailing "/".
  normalPath = p: match "(/[^/]+)+" p != null && match ".*/\\.\\.?(/.*)?" p == null;

  # The module system's priorities as data: what nixpkgs' lib.mkDefault and lib.mkBefore
  # return (lib/modules.nix), so this file can set them and the tests can see them.
  mkDefault = content: { _type = "override"; priority = 1000; inherit content; };
  mkBefore = content: { _type = "order"; priority = 500; inherit content; };

  # --- the index ----------------------------------------------------------------------------
  allZeroSha256 = "0000000000000000000000000000000000000000000000000000000000000000";

  # Placeholder values of one entry, as src/index/checks.rs finds them: `{ pointer; reason; }`
  # with pointers relative to the entry (`/artifact/sha256`). Only nix/fetch-model.nix needs
  # them (it has no daemon to ask); tests/it/nix.rs compares them with the daemon's.
  stubFields = entry:
    let
      escape = replaceStrings [ "~" "/" ] [ "~0" "~1" ];
      reasonOf = pointer: value:
        if isString value && match ".*TODO-STUB.*" value != null then "contains TODO-STUB"
        else if isString value && hasPrefix "STUB:" value then "starts with STUB:"
        else if isString value && hasPrefix "REVISIT:" value then "starts with REVISIT:"
        else if pointer == "/artifact/sizeBytes" && (isInt value || isFloat value) && value == 0 then "is 0"
        else if match "/artifact(/files/[0-9]+)?/sha256" pointer != null && value == allZeroSha256 then "is all zeros"
        else null;
      walk = pointer: value:
        let reason = reasonOf pointer value; in
        if reason != null then [{ inherit pointer reason; }]
        else if isAttrs value then concatMap (k: walk "${pointer}/${escape k}" value.${k}) (attrNames value)
        else if isList value then concatLists (genList (i: walk "${pointer}/${toString i}" (elemAt value i)) (length value))
        else [ ];
    in
    walk "" entry;

  # `artifact.sha256 (is all zeros)`, as the daemon prints a stub field.
  showStub = s: "${replaceStrings [ "/" ] [ "." ] (removePrefix "/" s.pointer)} (${s.reason})";

  # --- percent-encoding, byte for byte as src/index/source.rs does it -------------------------
  # Nix strings are bytes: `substring i 1` is one byte, a non-ASCII character several. Each byte
  # UTF-8 text can hold, as a one-byte string, cut from a character fromJSON builds (a JSON
  # \u escape gives a code point's UTF-8 bytes): 01..7F are themselves; the continuation bytes
  # 80..BF end U+0080..U+00BF; the lead bytes C2..F4 start the first code point they lead.
  # NUL cannot be in a Nix string, and C0, C1, F5..FF are in no UTF-8 text.
  hexDigits = [ "0" "1" "2" "3" "4" "5" "6" "7" "8" "9" "A" "B" "C" "D" "E" "F" ];
  hex2 = n: elemAt hexDigits (n / 16) + elemAt hexDigits (mod n 16);
  hex4 = n: hex2 (n / 256) + hex2 (mod n 256);
  character = cp: fromJSON "\"\\u${hex4 cp}\"";
  # Above U+FFFF, JSON needs a surrogate pair.
  astral = cp: fromJSON "\"\\u${hex4 (55296 + (cp - 65536) / 1024)}\\u${hex4 (56320 + mod (cp - 65536) 1024)}\"";
  byteString = n:
    if n < 128 then character n
    else if n < 192 then substring 1 1 (character n)
    else if n < 224 then substring 0 1 (character ((n - 192) * 64))
    else if n < 240 then substring 0 1 (character (if n == 224 then 2048 else (n - 224) * 4096))
    else substring 0 1 (astral (if n == 240 then 65536 else (n - 240) * 262144));
  utf8Bytes = genList (i: i + 1) 191 ++ genList (i: i + 194) 51;
  bytes = map (n: { inherit n; s = byteString n; }) utf8Bytes;

  # A path segment of a resolve URL: every byte outside A-Za-z0-9-._~ as %XX (the daemon's
  # SEGMENT set), so "/" inside a revision becomes %2F.
  encodedByte = listToAttrs (map
    (b: { name = b.s; value = if match "[A-Za-z0-9._~-]" b.s != null then b.s else "%${hex2 b.n}"; })
    bytes);
  encodeSegment = s: concatStringsSep "" (genList
    (i: encodedByte.${substring i 1 s} or (throw "models-fetch: ${toJSON s} is not UTF-8 text"))
    (stringLength s));

  # %XX sequences back to their bytes (percent_decode_str); anything else stays as it is.
  decodedByte = listToAttrs (map (b: { name = hex2 b.n; value = b.s; }) bytes);
  decodePercent = s: concatStringsSep "" (map
    (part:
      if isString part then part
      else decodedByte.${upperHex (head part)} or (throw "models-fetch: ${toJSON s} percent-encodes a byte that is not UTF-8 text"))
    (split "%([0-9A-Fa-f]{2})" s));

  # --- the URL an entry's file is fetched from, as src/index/source.rs builds it --------------
  publicHub = "https://huggingface.co";
  segmentsOf = s: filter isString (split "/" s);
  trimSlashes = s: let m = match "(.*[^/])/*" s; in if m == null then "" else head m;

  # `{endpoint}/{repo}/resolve/{revision}/{path}`: the revision encoded as one segment, the
  # path segment by segment (HubFile::resolve_url).
  resolveUrl = hub: concatStringsSep "/" ([ hub.endpoint hub.repo "resolve" (encodeSegment hub.revision) ]
    ++ map encodeSegment (segmentsOf hub.path));

  # A downloadUrl of the form `{endpoint}/{org}/{name}/resolve/{revision}/{path...}` (http or
  # https, no query or fragment) as a Hub file, its revision and path decoded; null for any
  # other URL (hub_of_url). The endpoint is the URL's origin as the url crate writes it
  # (scheme and host in lower case, no user info, no default port) and the segments before
  # `{org}`. Not mirrored: the url crate's other normalisations (dot segments, backslashes,
  # IDNA hosts) of URLs the daemon's index checks refuse or that no real index holds.
  hubOfUrl = url:
    let
      m = match "([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(/[^?#]*)?" url;
      scheme = lowerCase (elemAt m 0);
      hostPort = lowerCase (foldl' (_: part: part) "" (segmentsOf (replaceStrings [ "@" ] [ "/" ] (elemAt m 1))));
      port = { http = ":80"; https = ":443"; }.${scheme};
      authority = if hasSuffix port hostPort then substring 0 (stringLength hostPort - stringLength port) hostPort else hostPort;
      segments = segmentsOf (removePrefix "/" (if elemAt m 2 == null then "/" else elemAt m 2));
      n = length segments;
      at = foldl' (found: i: if elemAt segments i == "resolve" then i else found) null (genList (i: i) n);
    in
    if m == null || !(elem scheme [ "http" "https" ]) || at == null || at < 2 || n < at + 3 then null
    else {
      endpoint = concatStringsSep "/" ([ "${scheme}://${authority}" ] ++ sublist 0 (at - 2) segments);
      repo = "${elemAt segments (at - 2)}/${elemAt segments (at - 1)}";
      revision = decodePercent (elemAt segments (at + 1));
      path = concatStringsSep "/" (map decodePercent (sublist (at + 2) (n - at - 2) segments));
    };

  # The Hub file of an entry (Source::of): `repo`/`revision`/`path` on `endpoint`; else a
  # `downloadUrl` of the resolve form (on `endpoint` when it names the public Hub); null for
  # any other entry.
  hubOf = endpoint: entry:
    let
      a = entry.artifact or { };
      hub = hubOfUrl a.downloadUrl;
    in
    if a ? repo then
      { endpoint = trimSlashes endpoint; inherit (a) repo; revision = a.revision or "main"; path = a.path or a.filename; }
    else if !(a ? downloadUrl) || hub == null then null
    else hub // optionalAttrs (hub.endpoint == publicHub) { endpoint = trimSlashes endpoint; };

  # The URL of an entry's file (Source::of): the Hub resolve URL of `repo` on `endpoint`; else
  # a `downloadUrl` of the resolve form, rebuilt (on `endpoint` when it names the public Hub);
  # else `downloadUrl` as it is; null without either.
  sourceUrl = endpoint: entry:
    let hub = hubOf endpoint entry; in
    if hub != null then resolveUrl hub else (entry.artifact or { }).downloadUrl or null;

  # --- a model that is a set of files (artifact.files, pinned to artifact.commit) ------------
  # Why a relative path cannot name a file beneath a folder, as src/index/checks.rs says it
  # (unsafe_path_reason); null when it can. Lengths are in bytes, as there.
  controlCharacters = genList character 32 ++ genList (i: character (127 + i)) 33;
  unsafePathReason = path:
    let segments = split "/" path; in
    if path == "" then "is empty"
    else if stringLength path > 4096 then "is longer than 4096 bytes"
    else if match ".*\\\\.*" path != null then "contains a backslash"
    else if builtins.any (c: match ".*${c}.*" path != null) (builtins.tail controlCharacters) then "contains a control character"
    else if hasPrefix "/" path then "is absolute"
    else
      foldl'
        (found: seg:
          if found != null || !isString seg then found
          else if seg == "" then "has an empty segment (\"//\" or a trailing \"/\")"
          else if seg == "." then "has a \".\" segment"
          else if seg == ".." then "has a \"..\" segment"
          else if stringLength seg > 255 then "has a segment longer than 255 bytes"
          else null)
        null
        segments;

  # What makes an entry's file set unusable without the daemon to ask (nix/fetch-model.nix):
  # no commit, no Hub source, unsafe or repeated paths. The daemon's own checks
  # (`models-fetch validate`) are a superset.
  fileSetProblems = endpoint: entry:
    let
      a = entry.artifact;
      paths = map (f: f.path) a.files;
      repeated = filter (p: length (filter (q: q == p) paths) > 1) (unique paths);
    in
    optional (!(a ? commit)) "artifact.files needs artifact.commit, the commit its files are from"
    ++ optional (hubOf endpoint entry == null) "artifact.files needs a Hub source (artifact.repo, or a downloadUrl of the form {endpoint}/{org}/{name}/resolve/{revision}/{path})"
    ++ concatLists (genList
      (i:
        let p = elemAt paths i; reason = unsafePathReason p; in
        optional (reason != null) "artifact.files.${toString i} (${p}): ${toJSON p} ${reason}")
      (length paths))
    ++ map (p: "artifact.files: the path ${toJSON p} is listed more than once") repeated;

  # Each file of a set with the URL it is fetched from: `{endpoint}/{repo}/resolve/{commit}/{path}`,
  # encoded as a single file's URL is (resolveUrl).
  fileSet = endpoint: entry:
    let hub = hubOf endpoint entry; in
    map (f: f // { url = resolveUrl (hub // { revision = entry.artifact.commit; inherit (f) path; }); }) entry.artifact.files;

  # The ref a Hub cache layout writes: the entry's revision when it names a branch or tag, else
  # `main` (a 40-hex revision is the commit itself, and loading by repo id needs refs/main).
  hubRef = entry:
    let revision = entry.artifact.revision or "main"; in
    if match "[0-9a-f]{40}" revision != null then "main" else revision;

  # `snapshots/{commit}/{path}` -> `../../blobs/{sha256}`, one more `../` per folder in `path`
  # (as src/publish/mod.rs links it).
  snapshotTarget = path: sha256:
    concatStringsSep "" (genList (_: "../") (length (segmentsOf path) + 1)) + "blobs/${sha256}";

  # --- systemd time spans (systemd.time(7)) ----------------------------------------------------
  # The units systemd's parse_sec knows, in seconds (a month is 30.44 days, a year 365.25).
  timeUnits = {
    "" = 1;
    us = 1.0e-6;
    usec = 1.0e-6;
    "µs" = 1.0e-6;
    "μs" = 1.0e-6;
    ms = 1.0e-3;
    msec = 1.0e-3;
    s = 1;
    sec = 1;
    second = 1;
    seconds = 1;
    m = 60;
    min = 60;
    minute = 60;
    minutes = 60;
    h = 3600;
    hr = 3600;
    hour = 3600;
    hours = 3600;
    d = 86400;
    day = 86400;
    days = 86400;
    w = 604800;
    week = 604800;
    weeks = 604800;
    M = 2629800;
    month = 2629800;
    months = 2629800;
    y = 31557600;
    year = 31557600;
    years = 31557600;
  };

  # A time span as a unit setting holds it ("2min", "1h 30min", "90", 90, "infinity"):
  # `{ infinite = false; seconds = ...; }`, `{ infinite = true; }` for "infinity" and for 0
  # (which a start timeout reads as infinity), or null when it cannot be read.
  parseTimespan = value:
    let
      s = if isInt value then toString value else if isString value then value else "";
      blank = t: match "[[:space:]]*" t != null;
      number = digits: fraction:
        fromJSON (head (match "0*([0-9]+)" digits)) + (if fraction == null then 0 else fromJSON "0.${fraction}");
      sum = acc: rest:
        let m = match "[[:space:]]*([0-9]+)(\\.([0-9]+))?[[:space:]]*([^0-9.[:space:]]*)(.*)" rest; in
        if blank rest then acc
        else if m == null || !(timeUnits ? ${elemAt m 3}) then null
        else sum (acc + number (elemAt m 0) (elemAt m 2) * timeUnits.${elemAt m 3}) (elemAt m 4);
      seconds = sum 0 s;
    in
    if match "[[:space:]]*infinity[[:space:]]*" s != null then { infinite = true; }
    else if blank s || seconds == null then null
    else if seconds == 0 then { infinite = true; }
    else { infinite = false; inherit seconds; };

  # --- unit files ---------------------------------------------------------------------------
  # Renders `unit` (as `evaluate` returns it) the way NixOS writes a service file: a list
  # gives one line per element, a boolean `true`/`false`. Used by the tests, which compare it
  # with packaging/models-fetch.service; on NixOS, systemd.services does the rendering.
  renderUnit = unit:
    let
      value = v: if v == true then "true" else if v == false then "false" else toString v;
      section = name: attrs:
        "[${name}]\n" + concatStringsSep "" (concatLists (mapAttrsToList
          (k: v: map (x: "${k}=${value x}\n") (if isList v then v else [ v ]))
          attrs));
    in
    concatStringsSep "\n" [
      (section "Unit" ({
        Description = unit.description;
        Wants = concatStringsSep " " unit.wants;
        After = concatStringsSep " " unit.after;
      } // unit.unitConfig))
      (section "Service" unit.serviceConfig)
      (section "Install" { WantedBy = concatStringsSep " " unit.wantedBy; })
    ];


  # --- the site cache (services.models.siteCache) --------------------------------------------
  # One host of a site caches the Hub for the others (their huggingFace.endpoint): nginx, as
  # the text below configures it. The same text, rendered with siteCacheDefaults, is
  # packaging/nginx-site-cache.conf for hosts without NixOS (tests/nix/cases.nix checks that;
  # tests/it/fleet.rs runs what this renders in real nginx).
  siteCacheDefaults = {
    listen = [ "0.0.0.0:8080" ];
    upstream = "https://huggingface.co";
    cacheDir = "/var/cache/nginx/models-fetch";
    maxSize = "500g";
    inactive = "90d";
    sliceSize = "8m";
    resolvers = [ ];
    caFile = "/etc/ssl/certs/ca-certificates.crt";
  };

  # The upstream must be scheme://host[:port] only: a proxy_pass with a path would pass the
  # decoded URI, turning a revision's %2F into "/".
  siteCacheUpstreamOk = upstream: match "https?://[^/?#@]+" upstream != null;

  # The module's checks of the site cache's settings: assertions and warnings.
  siteCacheChecks = s:
    let
      option = "services.models.siteCache";
      host = let m = match "https?://([[][^]]*]|[^/:]+)(:[0-9]+)?" s.upstream; in if m == null then "" else head m;
      ipLiteral = match "[0-9.]+|[[].*" host != null;
    in
    {
      assertions = [
        {
          assertion = siteCacheUpstreamOk s.upstream;
          message = "${option}.upstream = \"${s.upstream}\" must be scheme://host[:port] with no path: nginx would pass a decoded URI, and a revision's %2F would become \"/\".";
        }
        {
          assertion = s.listen != [ ];
          message = "${option}.listen is empty; name at least one address:port for nginx to listen on.";
        }
        {
          assertion = normalPath (toString s.cacheDir);
          message = "${option}.cacheDir = \"${toString s.cacheDir}\" must be an absolute path without a trailing slash, \".\" or \"..\".";
        }
      ];
      warnings = optional (s.resolvers == [ ] && !ipLiteral)
        "${option}.resolvers is empty: nginx resolves the CDN hosts the Hub redirects to (cdn-lfs.huggingface.co, cas-bridge.xethub.hf.co) when a request comes and needs a DNS server for that; set it, e.g. [ \"127.0.0.53\" ] with services.resolved.";
    };

  # The nginx configuration (http { } context) for the settings `s` (siteCacheDefaults' keys).
  siteCacheConfig = s:
    let
      listen = concatStringsSep "" (map (l: "    listen ${l};\n") s.listen);
      resolver =
        if s.resolvers == [ ] then
          "    # No resolver: the CDN hosts the Hub redirects to must be IP addresses, or set one.\n"
        else "    resolver ${concatStringsSep " " s.resolvers} valid=300s;\n    resolver_timeout 10s;\n";
    in
    ''
      # models-fetch site cache: nginx as a caching reverse proxy of the Hugging Face Hub, the
      # huggingFace.endpoint (HF_ENDPOINT) of every other host of the site. Include it in the
      # http { } block. Rendered by nix/lib.nix (siteCacheConfig); do not edit by hand.
      #
      # Privacy: the Hub's own answers (HEAD/GET .../resolve/..., /api/...) are never cached,
      # so every request reaches the Hub with its own Authorization and the Hub decides for it.
      # Only the CDN's bytes are cached, keyed by the sha256 the Hub named in that very answer
      # (X-Linked-Etag) and the slice; the presigned query is never part of the key. The cache
      # is reachable only through a 302 the Hub gave to the request itself, so a request the
      # Hub refuses (a private repository without its token) gets the Hub's 401, never bytes.
      # Nothing of the client's request reaches the CDN but the range: no Authorization, no
      # cookies. models-fetch verifies every file's sha256 whatever this cache serves.

      proxy_cache_path ${s.cacheDir} levels=1:2 keys_zone=models_fetch:16m
          max_size=${s.maxSize} inactive=${s.inactive} use_temp_path=off;

      # The sha256 the Hub named for the file (X-Linked-Etag without quotes or W/); empty when
      # it named none, and then the answer is passed on but never cached.
      map $models_fetch_etag $models_fetch_sha256 {
          "~^(W/)?\"?(?<sha>[0-9a-f]{64})\"?$" $sha;
          default "";
      }
      map $models_fetch_sha256 $models_fetch_uncached {
          "" 1;
          default 0;
      }
      # Only an absolute http(s) Location (the CDN) is followed here; any other redirect is
      # passed on to the client.
      map $models_fetch_location $models_fetch_follow {
          "~^https?://" 1;
          default 0;
      }

      server {
      ${listen}${resolver}
          proxy_ssl_server_name on;
          proxy_ssl_verify on;
          proxy_ssl_verify_depth 4;
          proxy_ssl_trusted_certificate ${s.caFile};

          # The Hub: resolve and API requests, with the client's headers (its token), never
          # cached. Its 302 to the CDN is followed here instead of by the client.
          location / {
              proxy_pass ${s.upstream};
              proxy_intercept_errors on;
              error_page 302 = @models_fetch_cdn;
          }

          # The CDN, reached only through the Hub's 302 to this request.
          location @models_fetch_cdn {
              # Read before this location's proxy_pass replaces the Hub's answer; slices
              # (subrequests) share them.
              set $models_fetch_location $upstream_http_location;
              set $models_fetch_etag $upstream_http_x_linked_etag;
              set $models_fetch_size $upstream_http_x_linked_size;
              set $models_fetch_commit $upstream_http_x_repo_commit;
              add_header X-Repo-Commit $models_fetch_commit always;
              add_header X-Linked-Etag $models_fetch_etag always;
              add_header X-Linked-Size $models_fetch_size always;
              add_header X-Models-Fetch-Cache $upstream_cache_status always;
              if ($models_fetch_follow = 0) {
                  return 302 $models_fetch_location;
              }
              # A HEAD wants the Hub's headers only: no CDN request.
              if ($request_method = HEAD) {
                  return 200;
              }

              slice ${s.sliceSize};
              proxy_pass $models_fetch_location;
              # Only the range goes to the CDN: never Authorization or cookies.
              proxy_pass_request_headers off;
              proxy_set_header Range $slice_range;
              proxy_cache models_fetch;
              proxy_cache_key "sha256=$models_fetch_sha256 $slice_range";
              proxy_no_cache $models_fetch_uncached;
              proxy_cache_bypass $models_fetch_uncached;
              proxy_cache_valid 200 206 ${s.inactive};
              # One request fills a slice; the others wait for it.
              proxy_cache_lock on;
              proxy_cache_lock_age 1m;
              proxy_cache_lock_timeout 10m;
              proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires X-Accel-Redirect X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset;
              proxy_hide_header Set-Cookie;
              # nginx names the upstream URL in its error lines: here that is a presigned URL.
              error_log stderr crit;
          }
      }
    '';

  # --- the option defaults (module.nix declares its options with these) --------------------
  defaults = {
    enable = false;
    indexPath = ./index.json;
    huggingFace = {
      enable = false;
      cacheDir = "/var/lib/models/hf-cache";
      tokenFile = null;
      endpoint = "https://huggingface.co";
    };
    deployedModels = [ ];
    chakraModels = { };
    modelStorePath = "/var/lib/models";
    verifyChecksums = true;
    mirrors = [ ];
    user = null;
    group = "models";
    settings = { };
    consumers = { };
  };
  consumerDefaults = {
    models = [ ];
    timeoutSec = 1800;
  };

  # The one `user` the module creates (as a system user in `group`), the nixpkgs convention
  # for a static name of the module's own; any other name is an existing account, not touched.
  ownUser = "models-fetch";

  # Seconds a consumer's start may take beyond its wait for the models (TimeoutStartSec=).
  startSlack = 90;

  # Option values with every unset one at its default (the module system does this on NixOS;
  # the tests use it to write only what a case changes).
  withDefaults = cfg:
    defaults // cfg // {
      huggingFace = defaults.huggingFace // (cfg.huggingFace or { });
      consumers = mapAttrs (_: c: consumerDefaults // c) (cfg.consumers or { });
    };

  # The option each key the typed options write comes from; every other key comes from
  # services.models.settings. The build-time check's message names them.
  optionOfKey = {
    index = "services.models.indexPath";
    cache_dir = "services.models.huggingFace.cacheDir";
    store_dir = "services.models.modelStorePath";
    endpoint = "services.models.huggingFace.endpoint";
    verify_checksums = "services.models.verifyChecksums";
    deployed_models = "services.models.deployedModels";
    chakra_models = "services.models.chakraModels";
    mirrors = "services.models.mirrors";
  };

  # The settings as the config file holds them: null values left out (a null leaves the key at
  # the daemon's default, in tables too), paths as strings (named, not copied to the store).
  rendered =
    let
      plain = v:
        if builtins.isPath v then toString v
        else if isList v then map plain v
        else if isAttrs v && !(v ? outPath) then mapAttrs (_: plain) (filterAttrs (_: x: x != null) v)
        else v;
    in
    plain;

  # --- everything the module deploys ---------------------------------------------------------
  # cfg: the option values (paths as strings or Nix paths). The other arguments differ between
  # a NixOS system and a test: the binary, kill, the config file ExecStart names (stable, so a
  # config change reloads instead of restarting), the index the config names, and the
  # consumers' systemd.services as NixOS merged them (name -> { serviceConfig; }), which only
  # the assertions and warnings read.
  evaluate =
    { cfg
    , exe
    , kill
    , configFile ? "/etc/models-fetch/config.json"
    , indexFile ? "/etc/models-fetch/index.json"
    , services ? { }
    }:
    let
      indexName = toString cfg.indexPath;
      store = toString cfg.modelStorePath;
      cache = toString cfg.huggingFace.cacheDir;
      tokenFile = if cfg.huggingFace.tokenFile == null then null else toString cfg.huggingFace.tokenFile;
      dynamicUser = cfg.user == null;

      # Mirrors: a URL, or { url; credentialsFile; auth; }. A credentials file reaches the
      # service as the credential mirror-<n> (LoadCredential=), which the config names; the
      # file itself never enters the store or the config.
      mirrorOf = n: m:
        if isString m then { entry = m; } else
        let
          file = if m.credentialsFile or null == null then null else toString m.credentialsFile;
          name = "mirror-${toString n}";
        in
        if file == null then { entry = m.url; } else {
          entry = { inherit (m) url; credential = name; auth = m.auth or "bearer"; };
          inherit file;
          loadCredential = "${name}:${file}";
        };
      mirrorList = genList (i: mirrorOf (i + 1) (elemAt cfg.mirrors i)) (length cfg.mirrors);
      mirrorFiles = concatMap (m: optional (m ? file) m.file) mirrorList;
      loadCredential = optional (tokenFile != null) "hf-token:${tokenFile}"
        ++ concatMap (m: optional (m ? loadCredential) m.loadCredential) mirrorList;

      # The daemon's settings: snake_case keys as src/config.rs reads them, the user's
      # `settings` on top (tables merged one level). Never token_file: the token comes from
      # LoadCredential, as $CREDENTIALS_DIRECTORY/hf-token.
      base = {
        index = indexFile;
        cache_dir = cache;
        store_dir = store;
        endpoint = cfg.huggingFace.endpoint;
        verify_checksums = cfg.verifyChecksums;
        deployed_models = cfg.deployedModels;
        chakra_models = cfg.chakraModels;
        mirrors = map (m: m.entry) mirrorList;
      };
      settings = base // mapAttrs
        (k: v: if isAttrs v && isAttrs (base.${k} or null) then base.${k} // v else v)
        cfg.settings;

      # What the daemon reads, and deploys: deployed_models united with every chakra_models
      # list (settings included), first mention first.
      file = rendered settings;
      deploySet = unique ((file.deployed_models or [ ]) ++ concatLists (mapAttrsToList (_: ids: ids) (file.chakra_models or { })));

      # Directories: below /var/lib they are StateDirectory= (with DynamicUser in
      # /var/lib/private); anywhere else they need tmpfiles rules and ReadWritePaths=.
      cacheInStore = hasPrefix "${store}/" cache;
      dirs = [ store ] ++ optional (!cacheInStore) cache;
      stateDirectories = map (removePrefix "/var/lib/") (filter (hasPrefix "/var/lib/") dirs);
      customDirs = filter (d: !hasPrefix "/var/lib/" d) dirs;

      anyListed = deploySet != [ ];
      consumerNames = attrNames cfg.consumers;

      check = cond: message: { assertion = cond; inherit message; };

      # Only what the daemon cannot see: the index-level rules (unknown ids, chakras, stubs,
      # sources, reserved ids, an empty deploy set) are the daemon's, checked at build time.
      assertions = [
        (check (!anyListed || cfg.huggingFace.enable)
          "services.models: models are listed (${quoteList deploySet}) but services.models.huggingFace.enable is false, so nothing would fetch them; set services.models.huggingFace.enable = true (it runs models-fetch.service).")
        (check (tokenFile == null || !(hasPrefix "${builtins.storeDir}/" tokenFile || builtins.hasContext tokenFile))
          "services.models.huggingFace.tokenFile = \"${if tokenFile == null then "" else tokenFile}\" is inside ${builtins.storeDir}, which every user can read; keep the token in a file outside the store (root-only, e.g. from sops-nix or agenix) and set tokenFile to its path.")
        (check (tokenFile == null || hasPrefix "/" tokenFile)
          "services.models.huggingFace.tokenFile = \"${if tokenFile == null then "" else tokenFile}\" must be an absolute path.")
      ]
      ++ concatMap
        (file: [
          (check (!(hasPrefix "${builtins.storeDir}/" file || builtins.hasContext file))
            "services.models.mirrors: the credentialsFile \"${file}\" is inside ${builtins.storeDir}, which every user can read; keep mirror credentials in a file outside the store and name its path.")
          (check (hasPrefix "/" file)
            "services.models.mirrors: the credentialsFile \"${file}\" must be an absolute path.")
        ])
        mirrorFiles
      ++ [
        (check (!(cfg.settings ? token_file))
          "services.models.settings.token_file: set services.models.huggingFace.tokenFile instead; the token is passed to the service with LoadCredential and never named in the config.")
        (check (normalPath store)
          "services.models.modelStorePath = \"${store}\" must be an absolute path without a trailing slash, \".\" or \"..\".")
        (check (normalPath cache)
          "services.models.huggingFace.cacheDir = \"${cache}\" must be an absolute path without a trailing slash, \".\" or \"..\".")
        (check (!dynamicUser || customDirs == [ ])
          "services.models: ${quoteList customDirs} lies outside /var/lib, where a DynamicUser service cannot own files safely; set services.models.user (\"${ownUser}\", which the module creates, or an existing account) or keep modelStorePath and huggingFace.cacheDir under /var/lib.")
      ]
      ++ concatMap
        (name:
          let c = cfg.consumers.${name}; in
          [
            (check cfg.huggingFace.enable
              "services.models.consumers.${name}: consumers wait for models-fetch.service; set services.models.huggingFace.enable = true.")
            (check (name != "models-fetch")
              "services.models.consumers.models-fetch: the daemon cannot be its own consumer.")
            (check ((services.${name} or { }).serviceConfig or { } ? ExecStart)
              "services.models.consumers.${name}: systemd.services.${name} runs nothing (no script or ExecStart); name an existing service.")
          ] ++ map
            (id: check (elem id deploySet)
              "services.models.consumers.${name}.models: '${id}' is not deployed (deployed: ${quoteList deploySet}); add it to services.models.deployedModels or services.models.chakraModels.")
            c.models)
        consumerNames;

      # A consumer's TimeoutStartSec= is the module's default (timeoutSec + startSlack); a value
      # of the service's own wins, and one too short for the wait is reported, naming both.
      timeoutStartSecOf = c: if c.timeoutSec == null then "infinity" else "${toString (c.timeoutSec + startSlack)}s";
      timeoutWarnings = name:
        let
          c = cfg.consumers.${name};
          serviceConfig = (services.${name} or { }).serviceConfig or { };
          value = serviceConfig.TimeoutStartSec;
          span = parseTimespan (if isList value && value != [ ] then elemAt value (length value - 1) else value);
          setting = "systemd.services.${name}.serviceConfig.TimeoutStartSec = ${toJSON value}";
          timeoutSec = "services.models.consumers.${name}.timeoutSec";
          wait =
            if c.timeoutSec == null then "${timeoutSec} = null (the wait has no limit)"
            else "${timeoutSec} (${toString c.timeoutSec} s) + ${toString startSlack} s";
          remedy =
            "Raise it to ${toJSON (timeoutStartSecOf c)} (or remove it: the module sets that), or "
            + (if c.timeoutSec == null then "give ${timeoutSec} a limit"
            else if span != null && span.seconds > startSlack + 1 then "lower ${timeoutSec} to at most ${toString (floor (span.seconds - startSlack))}"
            else "lower ${timeoutSec}")
            + ".";
        in
        if !(serviceConfig ? TimeoutStartSec) then [ ]
        else if span == null then [ "${setting} cannot be read as a systemd time span, so it cannot be checked against ${wait}; systemd may stop the start before `models-fetch wait` gives up. Write it like \"30min\" or \"infinity\"." ]
        else if span.infinite || (c.timeoutSec != null && span.seconds >= c.timeoutSec + startSlack) then [ ]
        else [ "${setting} is shorter than ${wait}: systemd stops the start before `models-fetch wait` gives up. ${remedy}" ];
      warnings = concatMap timeoutWarnings consumerNames;

      # The build-time check (module.nix, checkConfig): the daemon reads `config` (a .json file
      # naming the index in the store) as the service will. When it refuses, its own message
      # lists every reason, naming the model or the key; this tells where each key comes from.
      checkHint = "services.models: models-fetch refused the config this module generated or the index (services.models.indexPath = ${indexName}); the message above says what to change. Its keys are the options "
        + concatStringsSep ", " (mapAttrsToList (key: option: "${key} = ${option}") optionOfKey)
        + "; any other key is services.models.settings.<key>.";
      checkCommand = { exe, config }: ''
        MODELS_FETCH_LOG=warn ${exe} --log stderr plan --config ${config} >/dev/null || {
          status=$?
          echo ${shellQuote checkHint} >&2
          exit "$status"
        }
      '';

      # The unit: setting for setting packaging/models-fetch.service, except paths and what
      # depends on options (User/Group, LoadCredential only with a tokenFile or mirror
      # credentials, ReadWritePaths
      # for directories outside /var/lib).
      unit = {
        description = "models-fetch: fetch, verify and publish machine-learning models";
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        wantedBy = [ "multi-user.target" ];
        unitConfig = {
          StartLimitIntervalSec = "5min";
          StartLimitBurst = 6;
        };
        serviceConfig = {
          Type = "notify";
          NotifyAccess = "main";
          ExecStart = "${exe} run --config ${configFile}";
          ExecReload = "${kill} -HUP $MAINPID";
          WatchdogSec = "30s";
          TimeoutStartSec = "30s";
          TimeoutStopSec = "15s";
          Restart = "on-failure";
          RestartSec = "10s";
          # 243: systemd could not load the credential (tokenFile missing).
          RestartPreventExitStatus = "65 78 243";

          Group = cfg.group;
          StateDirectoryMode = "0750";
          UMask = "0027";

          CapabilityBoundingSet = "";
          AmbientCapabilities = "";
          NoNewPrivileges = true;
          PrivateTmp = true;
          PrivateDevices = true;
          DevicePolicy = "closed";
          PrivateUsers = true;
          PrivateIPC = true;
          PrivateMounts = true;
          RemoveIPC = true;
          KeyringMode = "private";
          ProtectSystem = "strict";
          ProtectHome = true;
          ProtectClock = true;
          ProtectControlGroups = true;
          ProtectHostname = true;
          ProtectKernelLogs = true;
          ProtectKernelModules = true;
          ProtectKernelTunables = true;
          ProtectProc = "invisible";
          ProcSubset = "pid";
          RestrictAddressFamilies = "AF_INET AF_INET6 AF_UNIX";
          RestrictNamespaces = true;
          RestrictRealtime = true;
          RestrictSUIDSGID = true;
          LockPersonality = true;
          MemoryDenyWriteExecute = true;
          SystemCallArchitectures = "native";
          SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
          SystemCallErrorNumber = "EPERM";
        }
        // (if dynamicUser then { DynamicUser = true; } else { User = cfg.user; })
        // optionalAttrs (stateDirectories != [ ]) { StateDirectory = stateDirectories; }
        // optionalAttrs (customDirs != [ ]) { ReadWritePaths = customDirs; }
        // optionalAttrs (loadCredential != [ ]) { LoadCredential = loadCredential; };
      };

      # Directories outside /var/lib, created for the static user (DynamicUser is refused there).
      tmpfiles = map (d: "d ${d} 0750 ${toString cfg.user} ${cfg.group} - -") customDirs;

      # The account the module creates: only its own name (ownUser). Any other `user` is an
      # existing account (e.g. a normal user with its own group); defining it here would clash
      # with its isNormalUser and group.
      users = optionalAttrs (cfg.user == ownUser) {
        ${ownUser} = { isSystemUser = true; inherit (cfg) group; };
      };

      # For every user's shell (the seed's variables): where the index and the models are.
      environment = {
        INIXOS_MODEL_INDEX = indexFile;
        INIXOS_MODEL_STORE = store;
        INIXOS_MODEL_CACHE = cache;
      };

      # For consumer units: the same, plus the Hugging Face cache for huggingface_hub and
      # transformers, offline (the files are there once `wait` returns). One line a variable:
      # each is set with mkDefault below.
      # HUGGINGFACE_HUB_CACHE too: TGI and text-embeddings-inference read it, and
      # huggingface_hub's legacy constant of that name does not follow HF_HUB_CACHE.
      consumerEnvironment = environment // {
        HF_HUB_CACHE = cache;
        HUGGINGFACE_HUB_CACHE = cache;
        HF_HUB_OFFLINE = "1";
      };

      # Each consumer's systemd.services definition, priorities included: the variables and
      # TimeoutStartSec= with mkDefault, so the service's own values win (and a conflicting
      # definition cannot fail the evaluation); the wait before the service's own preStart,
      # which may read the models; lists (groups, mounts) added to the service's own.
      consumers = mapAttrs
        (_: c: {
          wants = [ "models-fetch.service" ];
          after = [ "models-fetch.service" ];
          environment = mapAttrs (_: mkDefault) consumerEnvironment;
          serviceConfig = {
            SupplementaryGroups = [ cfg.group ];
            ExecStartPre = mkBefore [
              (concatStringsSep " " ([ exe "wait" "--config" configFile ]
                ++ optional (c.timeoutSec != null) "--timeout ${toString c.timeoutSec}s"
                ++ c.models))
            ];
            # The start job includes the wait: a default start timeout would cut it short.
            TimeoutStartSec = mkDefault (timeoutStartSecOf c);
          }
          # A DynamicUser's StateDirectory lives in /var/lib/private (0700 root), which no
          # other user can traverse, and /var/lib/models is a symlink into it. A bind mount
          # onto that symlink would follow it, so, as systemd does for the service itself: an
          # empty tmpfs on /var/lib/private, and the state directories bound into it read-only.
          // optionalAttrs dynamicUser {
            TemporaryFileSystem = [ "/var/lib/private" ];
            BindReadOnlyPaths = map (d: "/var/lib/private/${d}") stateDirectories;
          };
        })
        cfg.consumers;
    in
    {
      inherit deploySet settings assertions warnings unit tmpfiles users environment
        consumerEnvironment consumers stateDirectories customDirs dynamicUser checkCommand;
      json = toJSON file;
      failedAssertions = map (a: a.message) (filter (a: !a.assertion) assertions);
    };
in
{
  inherit chakras defaults consumerDefaults ownUser optionOfKey withDefaults evaluate renderUnit
    stubFields showStub sourceUrl encodeSegment parseTimespan mkDefault mkBefore
    shellQuote hubOf unsafePathReason fileSetProblems fileSet hubRef snapshotTarget
    siteCacheDefaults siteCacheConfig siteCacheChecks;
  byteCount = length bytes;
}

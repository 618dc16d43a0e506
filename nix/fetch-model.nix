# A model from the index as fixed-output derivations: the files in the Nix store, fetched by
# Nix and checked against the entry's sha256s (pkgs.fetchurl). For hosts that want models in
# their closure instead of fetched at run time by models-fetch.service (README.md, section "NixOS"
# says when to use which).
#
#   fetchModel = pkgs.callPackage ./nix/fetch-model.nix { };
#   model = fetchModel { id = "ajna-insight-v2"; indexPath = ./index.json; };
#   # A single-file entry: "${model}" is the file itself.
#   # An entry with artifact.files: "${model}" is the model's folder, every file under its
#   # repository path (a link to its own fixed-output fetch), for from_pretrained("${model}"),
#   # --model-id, llama.cpp's split GGUFs; "${model.hubCache}" is a Hugging Face Hub cache
#   # holding it (HF_HUB_CACHE / HUGGINGFACE_HUB_CACHE = "${model.hubCache}", with
#   # HF_HUB_OFFLINE=1): models--{org}--{name}/blobs/{sha256}, snapshots/{commit}/{path} (a
#   # relative link to the blob, as models-fetch publishes it) and refs/{revision} (the
#   # entry's branch or tag, else main) holding the commit.
#
# The URL is the one models-fetch itself fetches (nix/lib.nix computes it as src/index/source.rs
# does; tests/it/nix.rs compares the two over hostile file names): the Hub resolve URL of
# artifact.repo/revision/path on `endpoint`, every byte outside A-Za-z0-9-._~ percent-encoded;
# else the entry's downloadUrl (rebuilt the same way when it is a resolve URL, on `endpoint`
# when it names the public Hub). Each file of a set comes from the same repository at
# `{endpoint}/{repo}/resolve/{commit}/{path}`, encoded the same way. The index itself is not
# validated here: check it with `models-fetch validate` (the fixed sha256s guard the content
# either way); what would make a set unusable (no commit, no Hub source, unsafe or repeated
# paths) is refused. A private repository needs credentials the build can read, which
# fetchurl only takes from a netrc file (its netrcPhase / netrcImpureEnvVars arguments, passed
# through here to every fetch); a token never belongs in a derivation.
{ fetchurl, runCommand }:
{ id
, indexPath ? ./index.json
, endpoint ? "https://huggingface.co"
, ...
}@args:
let
  mf = import ./lib.nix;
  inherit (builtins) attrNames concatStringsSep filter fromJSON isString listToAttrs map readFile removeAttrs split;
  indexName = toString indexPath;
  entries = (fromJSON (readFile indexPath)).models or [ ];
  byId = listToAttrs (map (e: { name = e.id; value = e; }) entries);
  entry = byId.${id} or (throw
    "fetch-model: Model '${id}' not found in index ${indexName} (known ids: ${concatStringsSep ", " (attrNames byId)})");
  stubs = mf.stubFields entry;
  url = mf.sourceUrl endpoint entry;
  fetchArgs = removeAttrs args [ "id" "indexPath" "endpoint" ];
  # A store path name: the file's base name, other characters as "-", at most 200 bytes, and
  # never starting with "." (which Nix refuses: .gitattributes is fetched as _.gitattributes).
  storeName = path:
    let n = builtins.substring 0 200 (concatStringsSep "-" (filter isString (split "[^A-Za-z0-9+._?=-]+" (builtins.baseNameOf path)))); in
    if builtins.substring 0 1 n == "." then "_${n}" else n;
  q = mf.shellQuote;

  # --- an entry with artifact.files ---------------------------------------------------------
  isSet = entry.artifact ? files;
  setProblems = mf.fileSetProblems endpoint entry;
  files = mf.fileSet endpoint entry;
  inherit (entry.artifact) commit;
  # One fixed-output fetch per distinct content (files with the same sha256 share it).
  fetched = listToAttrs (map
    (f: {
      name = f.sha256;
      value = fetchurl (fetchArgs // { inherit (f) url sha256; name = storeName f.path; });
    })
    files);
  # Building these only makes links: not worth a substituter or a remote builder.
  linkOnly = { preferLocalBuild = true; allowSubstitutes = false; };
  folder = runCommand id
    (linkOnly // {
      passthru = {
        inherit entry hubCache;
        # path -> the file's fixed-output derivation.
        files = listToAttrs (map (f: { name = f.path; value = fetched.${f.sha256}; }) files);
      };
    })
    (concatStringsSep "\n" ([ "mkdir -p \"$out\"" ] ++ map
      (f: ''
        mkdir -p "$(dirname "$out"/${q f.path})"
        ln -s ${fetched.${f.sha256}} "$out"/${q f.path}'')
      files));
  # The Hub cache: one repository folder, as models-fetch publishes it (src/publish/mod.rs).
  repo = ''"$out"/${q "models--${builtins.replaceStrings [ "/" ] [ "--" ] (mf.hubOf endpoint entry).repo}"}'';
  ref = mf.hubRef entry;
  hubCache = runCommand "hub-cache-${id}" linkOnly (concatStringsSep "\n" ([
    "mkdir -p ${repo}/blobs ${repo}/snapshots/${commit} \"$(dirname ${repo}/refs/${q ref})\""
  ]
  ++ map (sha256: "ln -s ${fetched.${sha256}} ${repo}/blobs/${sha256}") (attrNames fetched)
  ++ map
    (f: ''
      mkdir -p "$(dirname ${repo}/snapshots/${commit}/${q f.path})"
      ln -s ${q (mf.snapshotTarget f.path f.sha256)} ${repo}/snapshots/${commit}/${q f.path}'')
    files
  # Last, as models-fetch does: the ref names a complete snapshot.
  ++ [ "printf %s ${commit} > ${repo}/refs/${q ref}" ]));
in
if stubs != [ ] then
  throw "fetch-model: Model '${id}' is a stub entry in ${indexName}; replace the placeholder values of: ${
    concatStringsSep ", " (map mf.showStub stubs)}"
else if isSet && setProblems != [ ] then
  throw "fetch-model: Model '${id}' in ${indexName} cannot be fetched as a set of files: ${concatStringsSep "; " setProblems}"
else if isSet then folder
else if url == null then
  throw "fetch-model: Model '${id}' has no source in ${indexName}: give its artifact a repo or a downloadUrl"
else
  fetchurl (fetchArgs // {
    inherit url;
    name = storeName entry.artifact.filename;
    inherit (entry.artifact) sha256;
    passthru = { inherit entry; };
  })

# A model from the index as a fixed-output derivation: the file in the Nix store, fetched by
# Nix and checked against the entry's sha256 (pkgs.fetchurl). For hosts that want models in
# their closure instead of fetched at run time by models-fetch.service (README.md, section "NixOS"
# says when to use which).
#
#   fetchModel = pkgs.callPackage ./nix/fetch-model.nix { };
#   model = fetchModel { id = "ajna-insight-v2"; indexPath = ./index.json; };
#   # "${model}" is the file itself.
#
# The URL is the one models-fetch itself fetches (nix/lib.nix computes it as src/index/source.rs
# does; tests/it/nix.rs compares the two over hostile file names): the Hub resolve URL of
# artifact.repo/revision/path on `endpoint`, every byte outside A-Za-z0-9-._~ percent-encoded;
# else the entry's downloadUrl (rebuilt the same way when it is a resolve URL, on `endpoint`
# when it names the public Hub). The index itself is not validated here: check it with
# `models-fetch validate` (the fixed sha256 guards the content either way). A private repository needs credentials the build can read, which fetchurl only
# takes from a netrc file (its netrcPhase / netrcImpureEnvVars arguments, passed through
# here); a token never belongs in a derivation.
{ fetchurl }:
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
  # A store path name: the file's base name, other characters as "-".
  baseName = builtins.baseNameOf entry.artifact.filename;
  name = concatStringsSep "-" (filter isString (split "[^A-Za-z0-9+._?=-]+" baseName));
in
if stubs != [ ] then
  throw "fetch-model: Model '${id}' is a stub entry in ${indexName}; replace the placeholder values of: ${
    concatStringsSep ", " (map mf.showStub stubs)}"
else if url == null then
  throw "fetch-model: Model '${id}' has no source in ${indexName}: give its artifact a repo or a downloadUrl"
else
  fetchurl ((removeAttrs args [ "id" "indexPath" "endpoint" ]) // {
    inherit url name;
    inherit (entry.artifact) sha256;
    passthru = { inherit entry; };
  })

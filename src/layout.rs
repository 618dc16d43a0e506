//! Where every file lives: the one place that computes an on-disk path.
//!
//! `cache_dir` holds only the Hugging Face Hub cache layout, so the real `huggingface_hub`
//! reads it offline and `scan_cache_dir()` finds nothing foreign:
//! `models--{org}--{name}/blobs/{sha256}`, `snapshots/{commit}/{path}` (a relative symlink to
//! the blob), `refs/{revision}` (the commit, no newline, written last), `.locks/`, `CACHEDIR.TAG`.
//! Partial downloads sit beside the blobs as `{sha256}.models-fetch.incomplete`, a parallel
//! download's byte ranges beside those as `{partial}.chunks`.
//!
//! `store_dir` holds the stable paths consumers use: `{id}`, a symlink to the model's tree
//! `.models-fetch/trees/{id}/{key}/` (`key` a digest of the file set and where its blobs are),
//! a folder holding every file under its name as a relative symlink to its blob, so
//! `{id}/{filename}` and `{id}/1_Pooling/config.json` resolve; and `by-chakra/{chakra}/{id}`
//! (a symlink to `{id}`). Also in `.models-fetch/`: the lock, the stamps, the daemon's
//! `state.json`, and the blobs of files that do not come from a Hub repository.
//!
//! Pure: nothing here touches the disk.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::fsx;
use crate::index::{HubFile, Source};
use crate::item::{Item, ItemFile};

/// The name of the state folder inside `store_dir`.
const STATE_DIR: &str = ".models-fetch";
/// The folder of chakra links inside `store_dir`; no model id may take this name.
const BY_CHAKRA: &str = "by-chakra";
/// The folder of the model trees inside the state folder.
const TREES: &str = "trees";
/// The folder of the version records inside the state folder.
const VERSIONS: &str = "versions";
/// What a partial download adds to its blob's name.
const PARTIAL_SUFFIX: &str = ".models-fetch.incomplete";
/// What a byte-range sidecar adds to its partial file's name.
const SIDECAR_SUFFIX: &str = ".chunks";

/// Where everything lives, for one config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    cache_dir: PathBuf,
    store_dir: PathBuf,
}

impl Layout {
    pub fn new(config: &Config) -> Self {
        Self { cache_dir: config.cache_dir.clone(), store_dir: config.store_dir.clone() }
    }

    /// The Hub cache.
    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// The stable paths' root.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// models-fetch's own folder inside `store_dir`.
    pub fn state_dir(&self) -> PathBuf {
        self.store_dir.join(STATE_DIR)
    }

    /// The daemon's state file, which `wait` and `status` read.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    /// The cache directory tag, so backup tools skip the cache.
    pub fn cachedir_tag(&self) -> PathBuf {
        self.cache_dir.join("CACHEDIR.TAG")
    }

    /// The locks held while running: one in the Hub cache's own lock folder, one in the state
    /// folder, so neither directory is shared by two instances.
    pub fn lock_paths(&self) -> Vec<PathBuf> {
        vec![self.cache_dir.join(".locks/models-fetch.lock"), self.state_dir().join("lock")]
    }

    /// Names inside `store_dir` that a model's folder must not take: the chakra links, and the
    /// cache directory when it lies directly inside `store_dir` (as with the defaults).
    pub fn reserved_names(&self) -> Vec<String> {
        let mut names = vec![BY_CHAKRA.to_owned()];
        if let Ok(inside) = self.cache_dir.strip_prefix(&self.store_dir)
            && let Some(first) = inside.components().next()
        {
            names.push(first.as_os_str().to_string_lossy().into_owned());
        }
        names
    }

    /// The folder a model's blobs live under, every level of which models-fetch creates: the
    /// Hub cache, or the state folder.
    pub fn blob_root(&self, item: &Item) -> PathBuf {
        match item.source {
            Source::Hub(_) => self.cache_dir.clone(),
            Source::Url(_) => self.state_dir(),
        }
    }

    /// The folder of `item`'s blobs and partial files.
    pub fn blob_dir(&self, item: &Item) -> PathBuf {
        match &item.source {
            Source::Hub(hub) => self.hub_repo(hub).join("blobs"),
            // Not a Hub file: kept out of the Hub cache, whose scanner would flag it.
            Source::Url(_) => self.state_dir().join("blobs"),
        }
    }

    /// A file in the download cache, named by its sha256 (the Hub cache's blob for Hub files).
    pub fn blob(&self, item: &Item, file: &ItemFile) -> PathBuf {
        self.blob_dir(item).join(file.sha256.as_str())
    }

    /// Every place a blob of `sha256` may already be, verified by another model: the blobs of
    /// every repository in the cache (`repos`, the `models--*` folders found there) and the
    /// state folder's.
    pub fn blob_elsewhere(&self, repos: &[PathBuf], sha256: &str) -> Vec<PathBuf> {
        let mut places: Vec<PathBuf> = repos.iter().map(|r| r.join("blobs").join(sha256)).collect();
        places.push(self.state_dir().join("blobs").join(sha256));
        places
    }

    /// Whether `name`, a folder in the cache, is a Hub repository's (`models--*`).
    pub fn is_hub_repo_name(name: &str) -> bool {
        name.starts_with("models--")
    }

    /// The partial download of `file`: beside its blob, named by the expected sha256 so that a
    /// changed index entry never resumes old bytes.
    pub fn partial(&self, item: &Item, file: &ItemFile) -> PathBuf {
        self.blob_dir(item).join(format!("{}{PARTIAL_SUFFIX}", file.sha256))
    }

    /// The byte-range sidecar of `file`'s partial file.
    pub fn sidecar(&self, item: &Item, file: &ItemFile) -> PathBuf {
        Self::sidecar_of(&self.partial(item, file))
    }

    /// The byte-range sidecar of the partial file at `partial`.
    pub fn sidecar_of(partial: &Path) -> PathBuf {
        let mut name = partial.as_os_str().to_owned();
        name.push(SIDECAR_SUFFIX);
        PathBuf::from(name)
    }

    /// The sha256 a partial file's or a sidecar's name belongs to; `None` for any other name.
    pub fn partial_sha256(name: &str) -> Option<&str> {
        let (sha256, rest) = name.split_once(PARTIAL_SUFFIX)?;
        (rest.is_empty() || rest == SIDECAR_SUFFIX).then_some(sha256)
    }

    /// The record that the blob of `sha256` was verified.
    pub fn stamp(&self, sha256: &str) -> PathBuf {
        self.stamps_dir().join(format!("{sha256}.json"))
    }

    /// The folder of the stamps.
    pub fn stamps_dir(&self) -> PathBuf {
        self.state_dir().join("stamps")
    }

    /// A Hub repository's folder in the cache: `models--{org}--{name}`.
    pub fn hub_repo(&self, hub: &HubFile) -> PathBuf {
        self.cache_dir.join(format!("models--{}", hub.repo.replace('/', "--")))
    }

    /// The snapshot folder of a Hub repository at `commit`: `snapshots/{commit}`.
    pub fn snapshot_dir(&self, hub: &HubFile, commit: &str) -> PathBuf {
        self.hub_repo(hub).join("snapshots").join(commit)
    }

    /// The snapshot link of a file at `commit`: `snapshots/{commit}/{path}`.
    pub fn snapshot(&self, hub: &HubFile, commit: &str, file: &ItemFile) -> PathBuf {
        self.snapshot_dir(hub, commit).join(&file.path)
    }

    /// What the snapshot link of a file points at: `../../blobs/{sha256}`, one more `../` per
    /// folder in its path.
    pub fn snapshot_target(file: &ItemFile) -> PathBuf {
        let depth = file.path.matches('/').count();
        PathBuf::from(format!("{}blobs/{}", "../".repeat(2 + depth), file.sha256))
    }

    /// The ref of the model's revision, `refs/{revision}` (`refs/main` for a model pinned by
    /// its commit only), holding the commit.
    pub fn reference(&self, item: &Item) -> Option<PathBuf> {
        let (hub, name) = (item.hub()?, item.ref_name()?);
        Some(self.hub_repo(hub).join("refs").join(name))
    }

    /// The model's folder as consumers name it, `{store_dir}/{id}`: a symlink to its tree.
    pub fn model_link(&self, item: &Item) -> PathBuf {
        self.model_link_of(item.id.as_str())
    }

    /// The model's folder of model `id`.
    pub fn model_link_of(&self, id: &str) -> PathBuf {
        self.store_dir.join(id)
    }

    /// The trees of one model, `{store_dir}/.models-fetch/trees/{id}`.
    pub fn trees(&self, item: &Item) -> PathBuf {
        self.trees_of(item.id.as_str())
    }

    /// The trees of model `id`.
    pub fn trees_of(&self, id: &str) -> PathBuf {
        self.all_trees().join(id)
    }

    /// The tree of model `id` whose key is `key`.
    pub fn tree_of(&self, id: &str, key: &str) -> PathBuf {
        self.trees_of(id).join(key)
    }

    /// Whether `path`, a snapshot link or a ref a record names, lies where this layout writes
    /// them: `{cache_dir}/models--*/{part}/...` (`part` is `snapshots` or `refs`), no `..`.
    pub fn holds_hub_path(&self, path: &Path, part: &str) -> bool {
        let Ok(inside) = path.strip_prefix(&self.cache_dir) else { return false };
        let mut parts = inside.components().map(|c| match c {
            std::path::Component::Normal(name) => name.to_str(),
            _ => None,
        });
        let repo = parts.next().flatten().is_some_and(Self::is_hub_repo_name);
        let kind = parts.next().flatten() == Some(part);
        let rest: Vec<Option<&str>> = parts.collect();
        repo && kind && !rest.is_empty() && rest.iter().all(|p| p.is_some_and(|n| n != ".."))
    }

    /// Whether `path`, a blob a record names, lies where this layout keeps blobs (the Hub cache
    /// or the state folder's `blobs`): a record of another `cache_dir` is never acted on.
    pub fn holds_blob(&self, path: &Path) -> bool {
        let in_state = path.parent() == Some(self.state_dir().join("blobs").as_path());
        let in_cache = path.starts_with(&self.cache_dir)
            && path.parent().and_then(Path::file_name).is_some_and(|n| n == "blobs");
        in_state || in_cache
    }

    /// The key of the model's tree: a digest of its file set and of where its blobs are, so
    /// that a tree, once built, never changes.
    pub fn tree_key(&self, item: &Item) -> String {
        let mut text = item.set_digest().as_str().to_owned();
        text.push('\0');
        text.push_str(&self.blob_dir(item).to_string_lossy());
        let digest = crate::digest::hash_reader(text.as_bytes()).expect("hashing memory cannot fail").0;
        digest.as_str()[..32].to_owned()
    }

    /// The folder of every model's trees, `{store_dir}/.models-fetch/trees`.
    pub fn all_trees(&self) -> PathBuf {
        self.state_dir().join(TREES)
    }

    /// The tree key `link`, a model's folder as found in `store_dir`, points at, when it is a
    /// link to one of `id`'s trees (`.models-fetch/trees/{id}/{key}`); `None` for anything else
    /// (a user's file, a folder, another target).
    pub fn linked_tree_key(link: &Path, id: &str) -> Option<String> {
        let target = std::fs::read_link(link).ok()?;
        let key = target.strip_prefix(Path::new(STATE_DIR).join(TREES).join(id)).ok()?;
        let key = key.to_str().filter(|k| !k.is_empty() && !k.contains('/') && !k.starts_with('.'))?;
        Some(key.to_owned())
    }

    /// The folder of the version records, `{store_dir}/.models-fetch/versions`: one folder per
    /// model id, one record per version published (`{key}.json`).
    pub fn versions_dir(&self) -> PathBuf {
        self.state_dir().join(VERSIONS)
    }

    /// The record of the version of model `id` whose tree key is `key`.
    pub fn version_record(&self, id: &str, key: &str) -> PathBuf {
        self.versions_dir().join(id).join(format!("{key}.json"))
    }

    /// The folder of chakra links, `{store_dir}/by-chakra`.
    pub fn by_chakra(&self) -> PathBuf {
        self.store_dir.join(BY_CHAKRA)
    }

    /// The model's folder: `{store_dir}/.models-fetch/trees/{id}/{key}`, every file under its
    /// name as a relative symlink to its blob.
    pub fn tree(&self, item: &Item) -> PathBuf {
        self.trees(item).join(self.tree_key(item))
    }

    /// What the model's link points at: its tree, relative to `store_dir`.
    pub fn model_link_target(&self, item: &Item) -> PathBuf {
        Path::new(STATE_DIR).join(TREES).join(item.id.as_str()).join(self.tree_key(item))
    }

    /// `file`'s link in the tree at `tree`.
    pub fn tree_file(tree: &Path, file: &ItemFile) -> PathBuf {
        tree.join(&file.name)
    }

    /// What `file`'s link in the model's tree points at: its blob, relative to the link's
    /// folder.
    pub fn tree_target(&self, item: &Item, file: &ItemFile) -> PathBuf {
        fsx::relative_target(&self.blob(item, file), &Self::tree_file(&self.tree(item), file))
    }

    /// The stable path consumers read for `file`: `{store_dir}/{id}/{name}`.
    pub fn store_file(&self, item: &Item, file: &ItemFile) -> PathBuf {
        self.model_link(item).join(&file.name)
    }

    /// The stable path of the primary file: `{store_dir}/{id}/{filename}`.
    pub fn store_path(&self, item: &Item) -> PathBuf {
        self.store_file(item, item.primary())
    }

    /// The chakra link, `{store_dir}/by-chakra/{chakra}/{id}`.
    pub fn chakra_link(&self, item: &Item) -> PathBuf {
        self.store_dir.join(BY_CHAKRA).join(&item.chakra).join(item.id.as_str())
    }

    /// What the chakra link points at: `../../{id}`, the model's folder.
    pub fn chakra_target(item: &Item) -> PathBuf {
        Self::chakra_target_of(item.id.as_str())
    }

    /// What a chakra link of model `id` points at.
    pub fn chakra_target_of(id: &str) -> PathBuf {
        PathBuf::from("../..").join(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Sha256Hex;
    use crate::index::ModelId;

    fn layout() -> Layout {
        Layout { cache_dir: "/var/cache/hf".into(), store_dir: "/srv/models".into() }
    }

    fn file(path: &str, name: &str, sha: &str) -> ItemFile {
        ItemFile {
            path: path.into(),
            name: name.into(),
            sha256: Sha256Hex::try_from(sha.to_owned()).unwrap(),
            size_bytes: 1,
            git_oid: None,
        }
    }

    fn item(source: Source, filename: &str) -> Item {
        let path = match &source {
            Source::Hub(hub) => hub.path.clone(),
            Source::Url(_) => filename.to_owned(),
        };
        Item {
            id: serde_json::from_str::<ModelId>("\"m-1\"").unwrap(),
            version: "1".into(),
            chakra: "ajna".into(),
            source,
            commit: None,
            files: vec![file(&path, filename, &"ab".repeat(32))],
            primary: 0,
        }
    }

    fn hub(path: &str) -> HubFile {
        HubFile {
            endpoint: "https://huggingface.co".into(),
            repo: "org/name".into(),
            revision: "main".into(),
            path: path.into(),
        }
    }

    #[test]
    fn hub_files_follow_the_hub_cache() {
        let (layout, sha) = (layout(), "ab".repeat(32));
        let item = item(Source::Hub(hub("sub/model.bin")), "model.bin");
        let f = item.primary();
        let repo = Path::new("/var/cache/hf/models--org--name");
        assert_eq!(layout.blob(&item, f), repo.join("blobs").join(&sha));
        assert_eq!(
            layout.partial(&item, f),
            repo.join("blobs").join(format!("{sha}.models-fetch.incomplete"))
        );
        assert_eq!(
            layout.sidecar(&item, f),
            repo.join("blobs").join(format!("{sha}.models-fetch.incomplete.chunks"))
        );
        let hub = item.hub().unwrap();
        assert_eq!(layout.snapshot(hub, "c0", f), repo.join("snapshots/c0/sub/model.bin"));
        assert_eq!(layout.reference(&item), Some(repo.join("refs/main")));
        assert_eq!(Layout::snapshot_target(f), Path::new(&format!("../../../blobs/{sha}")));
        assert_eq!(layout.store_path(&item), Path::new("/srv/models/m-1/model.bin"));
        let key = layout.tree_key(&item);
        assert_eq!(layout.model_link(&item), Path::new("/srv/models/m-1"));
        assert_eq!(layout.model_link_target(&item), Path::new(&format!(".models-fetch/trees/m-1/{key}")));
        assert_eq!(layout.tree(&item), Path::new(&format!("/srv/models/.models-fetch/trees/m-1/{key}")));
        assert_eq!(
            layout.tree_target(&item, f),
            Path::new(&format!("../../../../../../var/cache/hf/models--org--name/blobs/{sha}"))
        );
        assert_eq!(layout.chakra_link(&item), Path::new("/srv/models/by-chakra/ajna/m-1"));
        assert_eq!(layout.stamp(&sha), Path::new(&format!("/srv/models/.models-fetch/stamps/{sha}.json")));
    }

    #[test]
    fn a_set_has_one_tree_per_file_set_with_nested_names() {
        let layout = layout();
        let mut set = item(Source::Hub(hub("model.safetensors")), "model.safetensors");
        set.commit = Some("c".repeat(40));
        set.files.push(file("1_Pooling/config.json", "1_Pooling/config.json", &"cd".repeat(32)));
        let nested = &set.files[1];
        let hub = set.hub().unwrap();
        let commit = "c".repeat(40);
        assert_eq!(
            layout.snapshot(hub, &commit, nested),
            Path::new(&format!("/var/cache/hf/models--org--name/snapshots/{commit}/1_Pooling/config.json"))
        );
        assert_eq!(
            Layout::snapshot_target(nested),
            Path::new(&format!("../../../blobs/{}", "cd".repeat(32)))
        );
        assert_eq!(layout.store_file(&set, nested), Path::new("/srv/models/m-1/1_Pooling/config.json"));
        assert!(layout.tree_target(&set, nested).starts_with("../../../../../../../var/cache/hf"));
        // Another file set, or the same one from another repository, is another tree.
        let mut other = set.clone();
        other.files[1].sha256 = Sha256Hex::try_from("ef".repeat(32)).unwrap();
        assert_ne!(layout.tree_key(&set), layout.tree_key(&other));
        let mut moved = set.clone();
        if let Source::Hub(hub) = &mut moved.source {
            hub.repo = "org/other".into();
        }
        assert_ne!(layout.tree_key(&set), layout.tree_key(&moved));
        // The order the index lists the files in does not matter.
        let mut reordered = set.clone();
        reordered.files.reverse();
        assert_eq!(layout.tree_key(&set), layout.tree_key(&reordered));
    }

    #[test]
    fn a_model_pinned_by_its_commit_gets_refs_main() {
        let commit = "c".repeat(40);
        let mut pinned = item(Source::Hub(HubFile { revision: commit.clone(), ..hub("m.bin") }), "m.bin");
        pinned.commit = Some(commit.clone());
        assert_eq!(pinned.ref_name(), Some("main"));
        assert_eq!(pinned.hub_file(pinned.primary()).unwrap().revision, commit);
        let branch = item(Source::Hub(HubFile { revision: "v2".into(), ..hub("m.bin") }), "m.bin");
        assert_eq!(branch.ref_name(), Some("v2"));
    }

    #[test]
    fn other_files_stay_out_of_the_hub_cache() {
        let (layout, sha) = (layout(), "ab".repeat(32));
        let item = item(Source::Url("https://example.org/m.bin".into()), "m.bin");
        assert_eq!(
            layout.blob(&item, item.primary()),
            Path::new("/srv/models/.models-fetch/blobs").join(&sha)
        );
        assert_eq!(layout.blob_root(&item), Path::new("/srv/models/.models-fetch"));
        assert_eq!(layout.reference(&item), None);
    }

    #[test]
    fn partial_names_read_back_to_their_sha256() {
        let layout = layout();
        let item = item(Source::Url("https://example.org/m.bin".into()), "m.bin");
        let f = item.primary();
        for path in [layout.partial(&item, f), layout.sidecar(&item, f)] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(Layout::partial_sha256(name), Some(f.sha256.as_str()));
        }
        assert_eq!(Layout::partial_sha256(f.sha256.as_str()), None);
        assert_eq!(Layout::partial_sha256("x.models-fetch.incomplete.tmp"), None);
    }

    #[test]
    fn records_are_acted_on_only_inside_the_cache() {
        let layout = layout();
        let snapshot = Path::new("/var/cache/hf/models--org--name/snapshots/c0/sub/model.bin");
        assert!(layout.holds_hub_path(snapshot, "snapshots"));
        assert!(!layout.holds_hub_path(snapshot, "refs"));
        assert!(layout.holds_hub_path(Path::new("/var/cache/hf/models--org--name/refs/main"), "refs"));
        for outside in [
            "/etc/passwd",
            "/var/cache/hf/models--org--name/refs",
            "/var/cache/hf/other/snapshots/c0/x",
            "/var/cache/hf/models--org--name/snapshots/../../../../etc/x",
        ] {
            assert!(!layout.holds_hub_path(Path::new(outside), "snapshots"), "{outside}");
            assert!(!layout.holds_hub_path(Path::new(outside), "refs"), "{outside}");
        }
        let blob = Path::new("/var/cache/hf/models--org--name/blobs/ab");
        assert!(layout.holds_blob(blob));
        assert!(layout.holds_blob(Path::new("/srv/models/.models-fetch/blobs/ab")));
        assert!(!layout.holds_blob(Path::new("/etc/blobs/ab")));
    }

    #[test]
    fn the_cache_inside_the_store_is_reserved() {
        assert_eq!(layout().reserved_names(), ["by-chakra"]);
        let inside = Layout { cache_dir: "/srv/models/hf-cache/hub".into(), store_dir: "/srv/models".into() };
        assert_eq!(inside.reserved_names(), ["by-chakra", "hf-cache"]);
    }
}

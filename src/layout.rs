//! Where every file lives: the one place that computes an on-disk path.
//!
//! `cache_dir` holds only the Hugging Face Hub cache layout, so the real `huggingface_hub`
//! reads it offline and `scan_cache_dir()` finds nothing foreign:
//! `models--{org}--{name}/blobs/{sha256}`, `snapshots/{commit}/{path}` (a relative symlink to
//! the blob), `refs/{revision}` (the commit, no newline, written last), `.locks/`, `CACHEDIR.TAG`.
//! Partial downloads sit beside the blobs as `{sha256}.models-fetch.incomplete`, a parallel
//! download's byte ranges beside those as `{partial}.chunks`.
//!
//! `store_dir` holds the stable paths consumers use, `{id}/{filename}` (a symlink to the blob)
//! and `by-chakra/{chakra}/{id}` (a symlink to the model's directory), plus `.models-fetch/`:
//! the lock, the stamps, the daemon's `state.json`, and the blobs of files that do not come
//! from a Hub repository.
//!
//! Pure: nothing here touches the disk.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::fsx;
use crate::index::{HubFile, Source};
use crate::item::Item;

/// The name of the state folder inside `store_dir`.
const STATE_DIR: &str = ".models-fetch";
/// The folder of chakra links inside `store_dir`; no model id may take this name.
const BY_CHAKRA: &str = "by-chakra";
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

    /// The folder a model's blob lives under, every level of which models-fetch creates: the
    /// Hub cache, or the state folder.
    pub fn blob_root(&self, item: &Item) -> PathBuf {
        match item.source {
            Source::Hub(_) => self.cache_dir.clone(),
            Source::Url(_) => self.state_dir(),
        }
    }

    /// The folder of `item`'s blob and partial file.
    pub fn blob_dir(&self, item: &Item) -> PathBuf {
        match &item.source {
            Source::Hub(hub) => self.hub_repo(hub).join("blobs"),
            // Not a Hub file: kept out of the Hub cache, whose scanner would flag it.
            Source::Url(_) => self.state_dir().join("blobs"),
        }
    }

    /// The file in the download cache, named by its sha256 (the Hub cache's blob for Hub files).
    pub fn blob(&self, item: &Item) -> PathBuf {
        self.blob_dir(item).join(item.sha256.as_str())
    }

    /// The partial download of `item`: beside its blob, named by the expected sha256 so that a
    /// changed index entry never resumes old bytes.
    pub fn partial(&self, item: &Item) -> PathBuf {
        self.blob_dir(item).join(format!("{}{PARTIAL_SUFFIX}", item.sha256))
    }

    /// The byte-range sidecar of `item`'s partial file.
    pub fn sidecar(&self, item: &Item) -> PathBuf {
        Self::sidecar_of(&self.partial(item))
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

    /// The record that `item`'s blob was verified.
    pub fn stamp(&self, item: &Item) -> PathBuf {
        self.state_dir().join("stamps").join(format!("{}.json", item.sha256))
    }

    /// The folder of the stamps.
    pub fn stamps_dir(&self) -> PathBuf {
        self.state_dir().join("stamps")
    }

    /// A Hub repository's folder in the cache: `models--{org}--{name}`.
    pub fn hub_repo(&self, hub: &HubFile) -> PathBuf {
        self.cache_dir.join(format!("models--{}", hub.repo.replace('/', "--")))
    }

    /// The snapshot link of a Hub file at `commit`: `snapshots/{commit}/{path}`.
    pub fn snapshot(&self, hub: &HubFile, commit: &str) -> PathBuf {
        self.hub_repo(hub).join("snapshots").join(commit).join(&hub.path)
    }

    /// What the snapshot link of a Hub file points at: `../../blobs/{sha256}`, one more `../`
    /// per folder in its path.
    pub fn snapshot_target(hub: &HubFile, item: &Item) -> PathBuf {
        let depth = hub.path.matches('/').count();
        PathBuf::from(format!("{}blobs/{}", "../".repeat(2 + depth), item.sha256))
    }

    /// The ref of a Hub file's revision, `refs/{revision}`, holding the commit it resolved to.
    pub fn reference(&self, hub: &HubFile) -> PathBuf {
        self.hub_repo(hub).join("refs").join(&hub.revision)
    }

    /// The stable path consumers read: `{store_dir}/{id}/{filename}`.
    pub fn store_path(&self, item: &Item) -> PathBuf {
        self.store_dir.join(item.id.as_str()).join(&item.filename)
    }

    /// What the stable path points at: the blob, relative to the link's folder.
    pub fn store_target(&self, item: &Item) -> PathBuf {
        fsx::relative_target(&self.blob(item), &self.store_path(item))
    }

    /// The chakra link, `{store_dir}/by-chakra/{chakra}/{id}`.
    pub fn chakra_link(&self, item: &Item) -> PathBuf {
        self.store_dir.join(BY_CHAKRA).join(&item.chakra).join(item.id.as_str())
    }

    /// What the chakra link points at: `../../{id}`, the model's folder.
    pub fn chakra_target(item: &Item) -> PathBuf {
        PathBuf::from("../..").join(item.id.as_str())
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

    fn item(source: Source, filename: &str) -> Item {
        let sha = "ab".repeat(32);
        Item {
            id: serde_json::from_str::<ModelId>("\"m-1\"").unwrap(),
            version: "1".into(),
            chakra: "ajna".into(),
            source,
            sha256: Sha256Hex::try_from(sha).unwrap(),
            size_bytes: 1,
            filename: filename.into(),
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
        let repo = Path::new("/var/cache/hf/models--org--name");
        assert_eq!(layout.blob(&item), repo.join("blobs").join(&sha));
        assert_eq!(layout.partial(&item), repo.join("blobs").join(format!("{sha}.models-fetch.incomplete")));
        assert_eq!(
            layout.sidecar(&item),
            repo.join("blobs").join(format!("{sha}.models-fetch.incomplete.chunks"))
        );
        let Source::Hub(hub) = &item.source else { unreachable!() };
        assert_eq!(layout.snapshot(hub, "c0"), repo.join("snapshots/c0/sub/model.bin"));
        assert_eq!(layout.reference(hub), repo.join("refs/main"));
        assert_eq!(Layout::snapshot_target(hub, &item), Path::new(&format!("../../../blobs/{sha}")));
        assert_eq!(layout.store_path(&item), Path::new("/srv/models/m-1/model.bin"));
        assert_eq!(
            layout.store_target(&item),
            Path::new(&format!("../../../var/cache/hf/models--org--name/blobs/{sha}"))
        );
        assert_eq!(layout.chakra_link(&item), Path::new("/srv/models/by-chakra/ajna/m-1"));
        assert_eq!(layout.stamp(&item), Path::new(&format!("/srv/models/.models-fetch/stamps/{sha}.json")));
    }

    #[test]
    fn other_files_stay_out_of_the_hub_cache() {
        let (layout, sha) = (layout(), "ab".repeat(32));
        let item = item(Source::Url("https://example.org/m.bin".into()), "m.bin");
        assert_eq!(layout.blob(&item), Path::new("/srv/models/.models-fetch/blobs").join(&sha));
        assert_eq!(layout.blob_root(&item), Path::new("/srv/models/.models-fetch"));
    }

    #[test]
    fn partial_names_read_back_to_their_sha256() {
        let layout = layout();
        let item = item(Source::Url("https://example.org/m.bin".into()), "m.bin");
        for path in [layout.partial(&item), layout.sidecar(&item)] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(Layout::partial_sha256(name), Some(item.sha256.as_str()));
        }
        assert_eq!(Layout::partial_sha256(item.sha256.as_str()), None);
        assert_eq!(Layout::partial_sha256("x.models-fetch.incomplete.tmp"), None);
    }

    #[test]
    fn the_cache_inside_the_store_is_reserved() {
        assert_eq!(layout().reserved_names(), ["by-chakra"]);
        let inside = Layout { cache_dir: "/srv/models/hf-cache/hub".into(), store_dir: "/srv/models".into() };
        assert_eq!(inside.reserved_names(), ["by-chakra", "hf-cache"]);
    }
}

//! The primary file of a model that is a set of files: the weights, or the shard index of
//! sharded weights, chosen by name alone ([`PRIMARY_RULE`]), and the format its name says.
//! Shared by `entry DIR` (a local folder) and `lock` (the files selected at a Hub commit).

use std::path::Path;

/// How the primary file of a set of files is picked (`entry DIR`, `lock`); the README and
/// `--help` say the same.
pub(crate) const PRIMARY_RULE: &str = "\
The primary file (artifact.filename/sha256/sizeBytes) of a set of files (a folder for `entry`, the selected files for `lock`) is --path when given, else the \
first kind of weights found: a sharded safetensors index (*.safetensors.index.json), else \
*.safetensors, else *.gguf, else a sharded PyTorch index (*.bin.index.json), else *.bin, *.pt, \
*.pth, *.ckpt, *.onnx, *.h5, *.msgpack or *.tflite; a shard other than the first \
(NAME-0000k-of-0000N.EXT, k > 1) is never chosen. Among several of that kind: the one in the \
fewest folders, then the largest, then the first by path. With no weights at all: the largest \
file, then the first by path.";

/// Weight formats in order of preference, by how a file name ends (see [`PRIMARY_RULE`]).
const WEIGHT_KINDS: &[&[&str]] = &[
    &[".safetensors.index.json"],
    &[".safetensors"],
    &[".gguf"],
    &[".bin.index.json"],
    &[".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".msgpack", ".tflite"],
];

/// The primary file of a set of files: the index in `files` (path, size) of the file [`PRIMARY_RULE`]
/// chooses. `files` is not empty.
pub(crate) fn primary_file(files: &[(&str, u64)]) -> usize {
    let name_of = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
    let kind = |path: &str| {
        let name = name_of(path);
        if later_shard(&name) {
            return None;
        }
        WEIGHT_KINDS
            .iter()
            .position(|endings| endings.iter().any(|e| name.len() > e.len() && name.ends_with(e)))
    };
    let best_kind = files.iter().filter_map(|(path, _)| kind(path)).min();
    let folders = |path: &str| path.matches('/').count();
    let candidates = (0..files.len()).filter(|&i| best_kind.is_none() || kind(files[i].0) == best_kind);
    let chosen = match best_kind {
        Some(_) => {
            candidates.min_by_key(|&i| (folders(files[i].0), std::cmp::Reverse(files[i].1), files[i].0))
        }
        None => candidates.min_by_key(|&i| (std::cmp::Reverse(files[i].1), files[i].0)),
    };
    chosen.expect("a set of files is not empty")
}

/// `NAME-0000k-of-0000N.EXT` with k other than 1: a shard that is not the first.
fn later_shard(name: &str) -> bool {
    let Some(at) = name.rfind("-of-") else { return false };
    let (before, after) = (&name[..at], &name[at + 4..]);
    let total = after.split('.').next().unwrap_or("");
    let Some((_, number)) = before.rsplit_once('-') else { return false };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(number) && digits(total) && after.len() > total.len() && number.parse::<u64>().ok() != Some(1)
}

/// The format named by a file's name: `safetensors` for a shard index, else its extension.
pub(crate) fn format_of(name: &str) -> Option<String> {
    if name.ends_with(".safetensors.index.json") {
        return Some("safetensors".to_owned());
    }
    Path::new(name).extension().map(|e| e.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick<'a>(files: &[(&'a str, u64)]) -> &'a str {
        files[primary_file(files)].0
    }

    #[test]
    fn weights_are_chosen_by_format_preference() {
        let transformers = [
            ("config.json", 700),
            ("model-00001-of-00002.safetensors", 5_000),
            ("model-00002-of-00002.safetensors", 2_000),
            ("model.safetensors.index.json", 30),
            ("pytorch_model.bin", 7_000),
            ("tokenizer.json", 9_000),
        ];
        assert_eq!(pick(&transformers), "model.safetensors.index.json");
        let embeddings = [
            ("1_Pooling/config.json", 300),
            ("model.safetensors", 90),
            ("onnx/model.onnx", 200),
            ("pytorch_model.bin", 100),
        ];
        assert_eq!(pick(&embeddings), "model.safetensors");
        // Split GGUFs: the first shard, never a later one, even when larger.
        let split = [("m-00002-of-00003.gguf", 900), ("m-00001-of-00003.gguf", 800), ("README.md", 5)];
        assert_eq!(pick(&split), "m-00001-of-00003.gguf");
        // Several of one kind: the top folder first, then the largest, then by path.
        let quants = [("sub/big.gguf", 900), ("q4.gguf", 400), ("q8.gguf", 800), ("q8b.gguf", 800)];
        assert_eq!(pick(&quants), "q8.gguf");
        let diffusers = [
            ("model_index.json", 1),
            ("unet/diffusion_pytorch_model.safetensors", 3_000),
            ("vae/diffusion_pytorch_model.safetensors", 300),
        ];
        assert_eq!(pick(&diffusers), "unet/diffusion_pytorch_model.safetensors");
        let whisper = [("config.json", 2), ("model.bin", 1_000), ("vocabulary.json", 3_000)];
        assert_eq!(pick(&whisper), "model.bin");
        let sharded_torch = [("pytorch_model-00001-of-00002.bin", 9), ("pytorch_model.bin.index.json", 1)];
        assert_eq!(pick(&sharded_torch), "pytorch_model.bin.index.json");
    }

    #[test]
    fn without_weights_the_largest_file_wins() {
        assert_eq!(pick(&[("a.txt", 5), ("deep/b.dat", 9), ("c.dat", 9)]), "c.dat");
        assert_eq!(
            pick(&[(".safetensors", 5), ("x.json", 6)]),
            "x.json",
            "a bare extension is no weights file"
        );
    }

    #[test]
    fn later_shards_are_recognised() {
        for later in ["m-00002-of-00003.gguf", "model-00003-of-00003.safetensors", "x-2-of-2.bin"] {
            assert!(later_shard(later), "{later}");
        }
        for not in ["m-00001-of-00003.gguf", "model.safetensors", "a-of-b.gguf", "m-00002-of-00003", "-of-.x"]
        {
            assert!(!later_shard(not), "{not}");
        }
    }

    #[test]
    fn formats_come_from_the_name() {
        assert_eq!(format_of("model.safetensors.index.json").as_deref(), Some("safetensors"));
        assert_eq!(format_of("sub/m.gguf").as_deref(), Some("gguf"));
        assert_eq!(format_of("README"), None);
    }
}

//! This member's latest snapshot, one file (`DIR/snapshot`): a line of JSON metadata (the
//! last log id it includes, the membership then, its id), then the state's bytes as the
//! registry's snapshot form saved them. Replaced atomically: written to a temporary file,
//! synced, renamed over the old one, and the directory synced.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::entry::SnapshotMeta;

/// A snapshot: what it covers, and the state.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub(crate) meta: SnapshotMeta,
    pub(crate) state: Vec<u8>,
}

/// Where this member keeps its snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFile {
    dir: PathBuf,
}

impl SnapshotFile {
    pub(crate) fn new(dir: &Path) -> SnapshotFile {
        SnapshotFile { dir: dir.to_owned() }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("snapshot")
    }

    /// The latest snapshot, if one was ever saved.
    pub(crate) fn load(&self) -> io::Result<Option<Image>> {
        let file = match File::open(self.path()) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let meta: SnapshotMeta = serde_json::from_str(&header).map_err(io::Error::other)?;
        let mut state = Vec::new();
        reader.read_to_end(&mut state)?;
        Ok(Some(Image { meta, state }))
    }

    /// Replaces the snapshot with `image`, durably.
    pub(crate) fn save(&self, image: &Image) -> io::Result<()> {
        let temporary = self.dir.join("snapshot.tmp");
        let mut file = File::create(&temporary)?;
        serde_json::to_writer(&mut file, &image.meta).map_err(io::Error::other)?;
        file.write_all(b"\n")?;
        file.write_all(&image.state)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.path())?;
        File::open(&self.dir)?.sync_all()
    }
}

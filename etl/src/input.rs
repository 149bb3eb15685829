//! Opening the inputs before anything is written: a missing file, a directory or an
//! unreadable file is an error naming its path, and each input gets its identity.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::PathBuf;

use xxhash_rust::xxh3::Xxh3;

/// What to read: a path (`-` is standard input) or a file already open (the
/// generated sample, which has no name on disk).
#[derive(Debug)]
pub enum InputSpec {
    /// A file, a named pipe, or `-` for standard input.
    Path(PathBuf),
    /// An open regular file, shown under `name`; it is read from its start.
    File {
        /// The name reports and the `etl_files` table show.
        name: String,
        /// The file.
        file: File,
    },
}

/// How much of a piped input identifies it: its first MiB (all of it when shorter).
const STREAM_HEAD: usize = 1 << 20;

/// An input, open and identified.
pub(crate) struct Opened {
    pub name: String,
    /// The content's identity: `file:<size>:<xxh3-128>` for regular files (and for
    /// streams that end within their head), `head:<xxh3-128 of the first MiB>` for
    /// longer streams, whose later lines are checked against hashes as they are read.
    pub identity: String,
    /// Bytes, when known before reading (regular files, short streams).
    pub size: Option<u64>,
    /// Whether the content is known whole upfront (false: a stream longer than its
    /// head, checked as it is read).
    pub whole: bool,
    pub reader: BufReader<Box<dyn Read + Send>>,
    /// Device and inode of a regular file, to refuse writing over an input.
    pub file_id: Option<(u64, u64)>,
}

fn hash_regular(file: &mut File) -> io::Result<(u64, u128)> {
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let k = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..k]);
        size += k as u64;
    }
    file.rewind()?;
    Ok((size, hasher.digest128()))
}

#[cfg(unix)]
fn dev_ino(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn dev_ino(_: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

pub(crate) fn regular(name: String, mut file: File) -> io::Result<Opened> {
    let meta = file.metadata()?;
    let (size, hash) = hash_regular(&mut file)?;
    Ok(Opened {
        name,
        identity: format!("file:{size}:{hash:032x}"),
        size: Some(size),
        whole: true,
        reader: BufReader::with_capacity(256 * 1024, Box::new(file)),
        file_id: dev_ino(&meta),
    })
}

/// Reads a stream's head (blocking until it has a MiB or ends) to identify it; the
/// head is then read again in front of the rest.
fn stream(name: String, mut reader: Box<dyn Read + Send>) -> io::Result<Opened> {
    let mut head = Vec::with_capacity(64 * 1024);
    (&mut reader)
        .take(STREAM_HEAD as u64)
        .read_to_end(&mut head)?;
    let hash = xxhash_rust::xxh3::xxh3_128(&head);
    let whole = head.len() < STREAM_HEAD;
    let identity = if whole {
        format!("file:{}:{hash:032x}", head.len())
    } else {
        format!("head:{hash:032x}")
    };
    let size = whole.then_some(head.len() as u64);
    let reader: Box<dyn Read + Send> = Box::new(io::Cursor::new(head).chain(reader));
    Ok(Opened {
        name,
        identity,
        size,
        whole,
        reader: BufReader::with_capacity(256 * 1024, reader),
        file_id: None,
    })
}

/// Opens and identifies one input; the error names the path.
pub(crate) fn open(spec: InputSpec) -> Result<Opened, String> {
    match spec {
        InputSpec::File { name, file } => {
            regular(name.clone(), file).map_err(|e| format!("input {name}: {e}"))
        }
        InputSpec::Path(path) if path.as_os_str() == "-" => {
            stream("-".into(), Box::new(io::stdin())).map_err(|e| format!("input - (stdin): {e}"))
        }
        InputSpec::Path(path) => {
            let name = path.display().to_string();
            let fail = |e: io::Error| format!("input {name}: {e}");
            let file = File::open(&path).map_err(fail)?;
            let meta = file.metadata().map_err(fail)?;
            if meta.is_dir() {
                return Err(format!("input {name} is a directory, not a file"));
            }
            if meta.is_file() {
                regular(name.clone(), file).map_err(fail)
            } else {
                // A pipe, a socket, a character device: streamed as it comes.
                stream(name.clone(), Box::new(file)).map_err(fail)
            }
        }
    }
}

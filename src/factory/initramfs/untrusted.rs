//! Opening a squashfs image that came from imported, untrusted content (an imager's
//! `rootfs.sqsh`, an extension's squashfs inside an initramfs) without letting its directory
//! table take the process down.
//!
//! backhand builds its in-memory tree by **recursing** once per directory level
//! (`Squashfs::into_filesystem_reader` → `extract_dir`). A stack overflow is not a panic: it
//! aborts the whole process, so [`super::contain_squashfs_panic`] cannot catch it. backhand
//! 0.25 refuses directory cycles (a directory entry pointing back at an ancestor), but a
//! *finite* tree a few thousand levels deep still overflows a 2 MiB worker stack (measured:
//! 1,000 levels need 0.5–1 MiB), and such a tree compresses to a few kilobytes.
//!
//! [`open`] therefore reads the superblock, inode and directory tables with backhand
//! (`Squashfs::from_reader`, which does not recurse) and walks the directory table
//! **iteratively** before handing the image to the recursive tree builder. It refuses:
//!
//! - a directory reached twice (backhand refuses it too, but only *after* recursing down the
//!   first path to it, so a walk that merely skipped repeats could measure a shorter path than
//!   backhand recurses along); what remains is a tree, whose depths are unambiguous;
//! - a tree deeper than [`MAX_DEPTH`];
//! - more than [`MAX_ENTRIES`] entries, a name longer than [`MAX_NAME_LEN`], or more than
//!   [`MAX_TREE_BYTES`] of full paths and symlink targets together: backhand copies the full
//!   path into every node and the target into every symlink entry, so a small image with many
//!   entries and long names would otherwise expand to gigabytes.
//!
//! # The directory table (squashfs 4.0)
//!
//! A directory inode names a listing by `block_index` (offset of a metadata block from the
//! start of the directory table), `block_offset` (offset inside that block, uncompressed) and
//! `file_size` (listing size + 3). The listing is a sequence of runs, each a 12-byte header
//! followed by `count + 1` entries (`count` ≤ 255, at most 256 entries per run):
//!
//! ```text
//! header: count u32 | start u32 (inode block) | inode_number u32 (base)
//! entry:  offset u16 | inode_offset i16 | type u16 | name_size u16 | name[name_size + 1]
//! ```
//!
//! The entry's inode number is `inode_number + inode_offset`; type 1 (basic) and 8 (extended)
//! are directories. All fields are little-endian. backhand stops reading a listing at the
//! first run it cannot decode; this walk reads at least every entry backhand reads (it stops
//! at the same places and never skips a run backhand would use), so the depth it measures is
//! never less than the depth backhand will recurse to.

use std::collections::HashSet;

use backhand::v4::inode::InodeInner;
use backhand::{BufReadSeek, FilesystemReader, Inode, Squashfs};

/// Deepest directory nesting accepted in an imported squashfs. Linux limits a path to 4,096
/// bytes, so a real tree cannot nest more than ~2,000 levels; Talos images nest about 12.
pub(crate) const MAX_DEPTH: usize = 256;

/// Most directory entries accepted in one imported squashfs (all listings together). A Talos
/// rootfs has about 10,000; the largest extensions (GPU drivers, firmware) a few tens of
/// thousands.
pub(crate) const MAX_ENTRIES: usize = 2_000_000;

/// Longest entry name accepted (squashfs allows 256 bytes; the on-disk field could say 65,536).
pub(crate) const MAX_NAME_LEN: usize = 256;

/// Most bytes of full paths plus symlink targets backhand's tree may hold for one image.
pub(crate) const MAX_TREE_BYTES: usize = 128 << 20;

/// What a symlink entry adds at most (backhand refuses targets of 256 bytes or more).
const SYMLINK_TARGET_MAX: usize = 256;

const DIR_HEADER_LEN: usize = 12;
const DIR_ENTRY_FIXED_LEN: usize = 8;
/// backhand's `Dir` asserts `count <= 256`: a run holds at most 257 entries (`count + 1`).
const MAX_RUN_COUNT: u32 = 256;
const TYPE_BASIC_DIRECTORY: u16 = 1;
const TYPE_EXTENDED_DIRECTORY: u16 = 8;
const TYPE_BASIC_SYMLINK: u16 = 3;
const TYPE_EXTENDED_SYMLINK: u16 = 10;

/// Reads an untrusted squashfs image: backhand's reader, after the directory tree's shape has
/// been checked without recursion. Errors are messages for the caller's context.
pub(crate) fn open<'b>(reader: impl BufReadSeek + 'b) -> Result<FilesystemReader<'b>, String> {
    let squashfs = Squashfs::from_reader(reader).map_err(|e| e.to_string())?;
    check_tree_shape(&squashfs)?;
    squashfs.into_filesystem_reader().map_err(|e| e.to_string())
}

/// Walks the directory table from the root, iteratively, and refuses a tree that would make
/// backhand's recursive reader exhaust the stack or spend unbounded work.
pub(crate) fn check_tree_shape(squashfs: &Squashfs<'_>) -> Result<(), String> {
    let corrupt = |what: String| Err(format!("corrupt squashfs: {what}"));
    let mut reached = HashSet::from([squashfs.root_inode.header.inode_number]);
    let (mut entries, mut bytes) = (0usize, 0usize);
    // (directory inode, depth, length of its full path)
    let mut pending: Vec<(&Inode, usize, usize)> = vec![(&squashfs.root_inode, 0, 1)];
    while let Some((dir, depth, path_len)) = pending.pop() {
        let Some(listing) = listing(squashfs, dir) else {
            continue;
        };
        for child in read_listing(listing) {
            entries += 1;
            if entries > MAX_ENTRIES {
                return corrupt(format!("more than {MAX_ENTRIES} directory entries"));
            }
            if child.name_len > MAX_NAME_LEN {
                return corrupt(format!(
                    "an entry name of {} bytes (at most {MAX_NAME_LEN})",
                    child.name_len
                ));
            }
            let child_path_len = path_len + 1 + child.name_len;
            bytes += child_path_len;
            if matches!(child.kind, TYPE_BASIC_SYMLINK | TYPE_EXTENDED_SYMLINK) {
                bytes += SYMLINK_TARGET_MAX;
            }
            if bytes > MAX_TREE_BYTES {
                return corrupt(format!(
                    "more than {} MiB of paths in the directory tree",
                    MAX_TREE_BYTES >> 20
                ));
            }
            if child.kind != TYPE_BASIC_DIRECTORY && child.kind != TYPE_EXTENDED_DIRECTORY {
                continue;
            }
            let Some(inode) = squashfs.inodes.get(&child.inode) else {
                // backhand fails on a dangling entry too; nothing to descend into.
                continue;
            };
            if !reached.insert(inode.header.inode_number) {
                return corrupt(
                    "a directory is reachable twice (a cycle or a hard-linked directory)".into(),
                );
            }
            if depth + 1 > MAX_DEPTH {
                return corrupt(format!("directories nested deeper than {MAX_DEPTH} levels"));
            }
            pending.push((inode, depth + 1, child_path_len));
        }
    }
    Ok(())
}

/// The listing bytes of a directory inode, located exactly as backhand locates them
/// (`Squashfs::dir_from_index`); `None` for an empty directory, a non-directory or a listing
/// outside the table (backhand fails on those before descending).
fn listing<'a>(squashfs: &'a Squashfs<'_>, dir: &Inode) -> Option<&'a [u8]> {
    let (block_index, file_size, block_offset) = match &dir.inner {
        InodeInner::BasicDirectory(d) => (
            u64::from(d.block_index),
            u32::from(d.file_size),
            usize::from(d.block_offset),
        ),
        InodeInner::ExtendedDirectory(d) => (
            u64::from(d.block_index),
            d.file_size,
            usize::from(d.block_offset),
        ),
        _ => return None,
    };
    if file_size < 4 {
        return None;
    }
    let (blocks, table) = &squashfs.dir_blocks;
    let start = usize::try_from(*blocks.get(&block_index)?).ok()?;
    let len = usize::try_from(file_size - 3).ok()?;
    table.get(start..)?.get(block_offset..)?.get(..len)
}

/// One directory entry: the inode it names and its type.
#[derive(Debug, PartialEq, Eq)]
struct Child {
    inode: u32,
    kind: u16,
    name_len: usize,
}

/// Decodes a listing's runs until one does not decode, like backhand. Entries whose inode
/// number does not fit are skipped (backhand fails on them).
fn read_listing(mut bytes: &[u8]) -> Vec<Child> {
    let mut children = Vec::new();
    while let Some((header, rest)) = bytes.split_first_chunk::<DIR_HEADER_LEN>() {
        let count = u32_at(header, 0);
        let base = u32_at(header, 8);
        if count > MAX_RUN_COUNT {
            break;
        }
        let mut run = Vec::new();
        let mut cursor = rest;
        let mut complete = true;
        for _ in 0..=count {
            let Some((fixed, after)) = cursor.split_first_chunk::<DIR_ENTRY_FIXED_LEN>() else {
                complete = false;
                break;
            };
            let inode_offset = i16::from_le_bytes([fixed[2], fixed[3]]);
            let kind = u16::from_le_bytes([fixed[4], fixed[5]]);
            let name_len = usize::from(u16::from_le_bytes([fixed[6], fixed[7]])) + 1;
            let Some(after_name) = after.get(name_len..) else {
                complete = false;
                break;
            };
            cursor = after_name;
            // backhand: `(inode_num as i32 + inode_offset as i32).try_into::<u32>()`.
            let number = (base as i32).wrapping_add(i32::from(inode_offset));
            if let Ok(inode) = u32::try_from(number) {
                run.push(Child {
                    inode,
                    kind,
                    name_len,
                });
            }
        }
        if !complete {
            break;
        }
        children.append(&mut run);
        bytes = cursor;
    }
    children
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(base: u32, entries: &[(i16, u16, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(entries.len() as u32 - 1).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&base.to_le_bytes());
        for (offset, kind, name) in entries {
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&offset.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        out
    }

    /// An uncompressed image (plain bytes a test can patch) built by `build`.
    fn image(build: impl FnOnce(&mut backhand::FilesystemWriter, backhand::NodeHeader)) -> Vec<u8> {
        let mut fs = backhand::FilesystemWriter::default();
        fs.set_time(0);
        fs.set_compressor(
            backhand::FilesystemCompressor::new(
                backhand::compression::Compressor::Uncompressed,
                None,
            )
            .unwrap(),
        );
        let h = backhand::NodeHeader::new(0o755, 0, 0, 0);
        build(&mut fs, h);
        let mut out = std::io::Cursor::new(Vec::new());
        fs.write(&mut out).unwrap();
        out.into_inner()
    }

    /// An image of `depth` nested directories `d/d/d/…` (with a file at the bottom).
    fn nested(depth: usize) -> Vec<u8> {
        image(|fs, h| {
            let mut path = String::new();
            for _ in 0..depth {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push('d');
                fs.push_dir(&path, h).unwrap();
            }
            fs.push_file(std::io::Cursor::new(b"x".to_vec()), format!("{path}/f"), h)
                .unwrap();
        })
    }

    #[test]
    fn a_tree_at_the_depth_limit_is_read() {
        let fs = open(std::io::Cursor::new(nested(MAX_DEPTH))).unwrap();
        // root + MAX_DEPTH directories + the file
        assert_eq!(fs.files().count(), MAX_DEPTH + 2);
    }

    /// Regression (issue 10, fuzzing): backhand's tree builder recurses once per level, and a
    /// stack overflow aborts the process. Read with a 256 KiB stack, a tree a little deeper
    /// than the limit is refused by the iterative walk before backhand recurses; without the
    /// walk this test aborts the test binary.
    #[test]
    fn a_deeper_tree_is_refused_before_the_recursive_reader_runs() {
        let image = nested(MAX_DEPTH + 100);
        let result = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || open(std::io::Cursor::new(image)).map(|fs| fs.files().count()))
            .unwrap()
            .join()
            .unwrap();
        let err = result.unwrap_err();
        assert!(err.contains("nested deeper than 256 levels"), "{err}");
    }

    #[test]
    fn listing_runs_decode_until_one_is_truncated() {
        let mut bytes = run(10, &[(0, 1, "a"), (1, 2, "bb")]);
        bytes.extend(run(20, &[(-1, 8, "c")]));
        let whole = bytes.len();
        bytes.extend(run(30, &[(0, 1, "dropped")]));
        bytes.truncate(whole + DIR_HEADER_LEN + 3);
        assert_eq!(
            read_listing(&bytes),
            vec![
                Child {
                    inode: 10,
                    kind: 1,
                    name_len: 1
                },
                Child {
                    inode: 11,
                    kind: 2,
                    name_len: 2
                },
                Child {
                    inode: 19,
                    kind: 8,
                    name_len: 1
                },
            ]
        );
    }

    /// Found in review: backhand refuses a directory reached twice only after recursing down
    /// the first path to it, so the walk must refuse it outright rather than skip it.
    #[test]
    fn a_directory_reachable_twice_is_refused() {
        let bytes = image(|fs, h| {
            fs.push_dir("aaaa", h).unwrap();
            fs.push_dir("bbbb", h).unwrap();
        });
        let mut squashfs = Squashfs::from_reader(std::io::Cursor::new(bytes)).unwrap();
        check_tree_shape(&squashfs).unwrap();
        // Point the `bbbb` entry at `aaaa`'s inode (same run, so the same base number).
        let table = &mut squashfs.dir_blocks.1;
        let at = |name: &[u8]| table.windows(4).position(|w| w == name).unwrap();
        let (a, b) = (at(b"aaaa"), at(b"bbbb"));
        let offset = [table[a - 6], table[a - 5]];
        table[b - 6..b - 4].copy_from_slice(&offset);
        let err = check_tree_shape(&squashfs).unwrap_err();
        assert!(err.contains("reachable twice"), "{err}");
    }

    /// backhand accepts runs of up to 257 entries (`count <= 256`); the walk must read them
    /// all (found in review: stopping at 256 let a root listing hide the whole tree).
    #[test]
    fn runs_of_257_entries_are_read_and_longer_ones_end_the_listing() {
        let names: Vec<String> = (0..257).map(|i| format!("d{i}")).collect();
        let entries: Vec<(i16, u16, &str)> = names.iter().map(|n| (0, 1, n.as_str())).collect();
        let bytes = run(1, &entries);
        assert_eq!(read_listing(&bytes).len(), 257);
        let mut bytes = run(1, &[(0, 1, "a")]);
        bytes[..4].copy_from_slice(&257u32.to_le_bytes());
        assert!(read_listing(&bytes).is_empty());
    }

    #[test]
    fn negative_inode_numbers_are_skipped() {
        let bytes = run(0, &[(-1, 1, "a"), (2, 1, "b")]);
        assert_eq!(
            read_listing(&bytes),
            vec![Child {
                inode: 2,
                kind: 1,
                name_len: 1
            }]
        );
    }
}

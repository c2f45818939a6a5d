//! A writer for the "newc" cpio format the kernel unpacks as an initramfs.
//! Entries get fixed owners and times so an image is a pure function of its
//! inputs (its cache key is a hash of them).

use std::io::{self, Write};

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

pub struct CpioWriter<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        CpioWriter {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        let ino = self.next_ino;
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            u32::try_from(data.len()).map_err(|_| io::Error::other("cpio entry over 4 GiB"))?,
            0,
            0,
            0,
            0,
            u32::try_from(name.len() + 1).expect("short name"),
            0,
        ];
        let mut hdr = String::from("070701");
        for f in fields {
            hdr.push_str(&format!("{f:08x}"));
        }
        self.put(hdr.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad4()?;
        self.put(data)?;
        self.pad4()
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (perm & 0o7777), &[])
    }

    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (perm & 0o7777), data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, target.as_bytes())
    }

    /// Writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minimal reader for the format, to check the writer round-trips.
    fn read(buf: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            let hdr = std::str::from_utf8(&buf[pos..pos + 110]).unwrap();
            assert_eq!(&hdr[..6], "070701");
            let field = |i: usize| u32::from_str_radix(&hdr[6 + i * 8..14 + i * 8], 16).unwrap();
            let (mode, size, namesize) = (field(1), field(6) as usize, field(11) as usize);
            let name = std::str::from_utf8(&buf[pos + 110..pos + 110 + namesize - 1])
                .unwrap()
                .to_string();
            pos = (pos + 110 + namesize).div_ceil(4) * 4;
            let data = buf[pos..pos + size].to_vec();
            pos = (pos + size).div_ceil(4) * 4;
            if name == "TRAILER!!!" {
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn round_trips_dirs_files_links() {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("/bin/init", 0o755, b"#!/bin/sh\n").unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.file("/etc/x", 0o644, b"").unwrap();
        let buf = w.finish().unwrap();
        assert_eq!(buf.len() % 4, 0);
        let e = read(&buf);
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].0, "bin");
        assert_eq!(e[0].1, S_IFDIR | 0o755);
        assert_eq!(
            e[1],
            ("bin/init".into(), S_IFREG | 0o755, b"#!/bin/sh\n".to_vec())
        );
        assert_eq!(
            e[2],
            ("bin/sh".into(), S_IFLNK | 0o777, b"busybox".to_vec())
        );
        assert_eq!(e[3].2.len(), 0);
    }

    #[test]
    fn same_inputs_same_bytes() {
        let mk = || {
            let mut w = CpioWriter::new(Vec::new());
            w.file("a", 0o644, b"hello").unwrap();
            w.finish().unwrap()
        };
        assert_eq!(mk(), mk());
    }
}

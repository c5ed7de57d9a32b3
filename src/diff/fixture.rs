//! Layers for tests that the tar crate's builder cannot make (a GNU sparse entry), shared by
//! the unit tests of layer application, the image fixtures and the fuzz regressions.

/// A GNU sparse entry: `real` bytes long, its only data the 512 bytes of `x` at the end.
pub fn sparse_tar(name: &str, real: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_path(name).expect("fixture entry");
    h.set_mode(0o644);
    h.set_size(512);
    h.set_mtime(1_600_000_000);
    let g = h.as_gnu_mut().expect("fixture entry");
    // base-256 (GNU) numbers: any u64 fits
    let b256 = |v: u64, dst: &mut [u8]| {
        dst.fill(0);
        dst[0] = 0x80;
        let n = dst.len();
        dst[n - 8..].copy_from_slice(&v.to_be_bytes());
    };
    b256(real, &mut g.realsize);
    b256(real - 512, &mut g.sparse[0].offset);
    b256(512, &mut g.sparse[0].numbytes);
    h.set_cksum();
    let mut t = h.as_bytes().to_vec();
    t.extend_from_slice(&[b'x'; 512]);
    t.extend_from_slice(&[0; 1024]);
    t
}

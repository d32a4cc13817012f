use super::*;
use std::io::Write;

enum Item<'a> {
    File(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
}

fn raw_name(field: &mut [u8], name: &str) {
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

fn tar_gz(path: &Path, items: &[Item]) {
    let gz =
        flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for item in items {
        let mut header = tar::Header::new_gnu();
        let (name, data, kind, mode, link): (&str, &[u8], _, u32, Option<&str>) = match item {
            Item::File(n, d, m) => (n, d, tar::EntryType::Regular, *m, None),
            Item::Dir(n) => (n, b"", tar::EntryType::Directory, 0o755, None),
            Item::Symlink(n, t) => (n, b"", tar::EntryType::Symlink, 0o777, Some(t)),
            Item::HardLink(n, t) => (n, b"", tar::EntryType::Link, 0o644, Some(t)),
        };
        // Raw bytes: the tar crate's setters refuse the hostile names we need to test.
        raw_name(&mut header.as_old_mut().name, name);
        if let Some(link) = link {
            raw_name(&mut header.as_old_mut().linkname, link);
        }
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

fn zip(path: &Path, items: &[Item]) {
    let mut writer = zip::ZipWriter::new(fs::File::create(path).unwrap());
    for item in items {
        let opts = |mode| zip::write::SimpleFileOptions::default().unix_permissions(mode);
        match item {
            Item::File(n, d, m) => {
                writer.start_file(*n, opts(*m)).unwrap();
                writer.write_all(d).unwrap();
            }
            Item::Dir(n) => writer.add_directory(*n, opts(0o755)).unwrap(),
            Item::Symlink(n, t) => writer.add_symlink(*n, *t, opts(0o777)).unwrap(),
            Item::HardLink(..) => unreachable!("zip has no hard links"),
        }
    }
    writer.finish().unwrap();
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn release_items() -> Vec<Item<'static>> {
    vec![
        Item::Dir("build/bin/"),
        Item::File("build/bin/llama-server", b"#!/bin/sh\necho hi\n", 0o755),
        Item::File("build/bin/libllama.so.0", b"lib", 0o644),
        Item::Symlink("build/bin/libllama.so", "libllama.so.0"),
        Item::File("./build/LICENSE", b"MIT", 0o644),
    ]
}

#[test]
fn tar_gz_release_layout_with_links_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.tar.gz");
    let mut items = release_items();
    items.push(Item::HardLink(
        "build/bin/llama-copy",
        "build/bin/llama-server",
    ));
    tar_gz(&archive, &items);
    let dest = tmp.path().join("out");
    let files = extract(&archive, ArchiveKind::TarGz, &dest).unwrap();
    assert_eq!(files.len(), 4);
    let bin = dest.join("build/bin");
    assert_eq!(fs::read(bin.join("libllama.so")).unwrap(), b"lib");
    assert_eq!(
        fs::read(bin.join("llama-copy")).unwrap(),
        fs::read(bin.join("llama-server")).unwrap()
    );
    assert!(dest.join("build/LICENSE").is_file());
    #[cfg(unix)]
    {
        assert_eq!(mode(&bin.join("llama-server")), 0o755);
        assert_eq!(mode(&bin.join("libllama.so.0")), 0o644);
        assert!(
            fs::symlink_metadata(bin.join("libllama.so"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }
}

#[test]
fn zip_release_layout_with_links_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("a.zip");
    zip(&archive, &release_items());
    let dest = tmp.path().join("out");
    extract(&archive, ArchiveKind::Zip, &dest).unwrap();
    let bin = dest.join("build/bin");
    assert_eq!(fs::read(bin.join("libllama.so")).unwrap(), b"lib");
    #[cfg(unix)]
    assert_eq!(mode(&bin.join("llama-server")), 0o755);
}

fn assert_rejected(kind: ArchiveKind, items: &[Item], why: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("evil");
    match kind {
        ArchiveKind::TarGz => tar_gz(&archive, items),
        ArchiveKind::Zip => zip(&archive, items),
    }
    let dest = tmp.path().join("deep/out");
    let err = extract(&archive, kind, &dest).unwrap_err();
    assert!(
        matches!(err, ExtractError::Unsafe { .. }),
        "{kind:?}: {err}"
    );
    assert!(err.to_string().contains(why), "{err}");
    // Nothing escaped: the only things next to the archive are the archive and `deep`.
    let mut siblings: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    siblings.sort();
    assert_eq!(siblings, ["deep", "evil"]);
    assert_eq!(fs::read_dir(tmp.path().join("deep")).unwrap().count(), 1);
}

#[test]
fn hostile_paths_are_rejected() {
    for kind in [ArchiveKind::TarGz, ArchiveKind::Zip] {
        assert_rejected(kind, &[Item::File("../evil", b"x", 0o644)], "`..`");
        assert_rejected(kind, &[Item::File("ok/../../evil", b"x", 0o644)], "`..`");
        assert_rejected(
            kind,
            &[Item::File("/tmp/evil-abs", b"x", 0o644)],
            "absolute",
        );
        assert_rejected(kind, &[Item::File("..\\evil", b"x", 0o644)], "`..`");
        assert_rejected(kind, &[Item::File("C:\\evil", b"x", 0o644)], "prefix");
    }
}

#[test]
fn links_out_of_the_folder_are_rejected() {
    for kind in [ArchiveKind::TarGz, ArchiveKind::Zip] {
        assert_rejected(kind, &[Item::Symlink("up", "../..")], "outside");
        assert_rejected(kind, &[Item::Symlink("a/b/up", "../../../x")], "outside");
        assert_rejected(kind, &[Item::Symlink("abs", "/etc/passwd")], "outside");
    }
    assert_rejected(
        ArchiveKind::TarGz,
        &[Item::HardLink("h", "../../etc/passwd")],
        "`..`",
    );
}

#[test]
fn links_that_stay_inside_are_fine() {
    assert!(link_stays_inside(Path::new("a/b/link"), "../c"));
    assert!(link_stays_inside(Path::new("a/link"), "./x/../y"));
    assert!(!link_stays_inside(Path::new("link"), "../x"));
    assert!(!link_stays_inside(Path::new("a/link"), "x/../../../y"));
}

#[test]
fn damaged_archives_are_corrupt_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("bad");
    fs::write(&archive, b"this is not an archive at all").unwrap();
    for kind in [ArchiveKind::TarGz, ArchiveKind::Zip] {
        let err = extract(&archive, kind, &tmp.path().join("out")).unwrap_err();
        assert!(matches!(err, ExtractError::Corrupt(_)), "{kind:?}: {err}");
    }
}

#[test]
fn kinds_from_names() {
    assert_eq!(
        ArchiveKind::from_name("llama-b9860-bin-ubuntu-x64.tar.gz"),
        Some(ArchiveKind::TarGz)
    );
    assert_eq!(ArchiveKind::from_name("x.TGZ"), Some(ArchiveKind::TarGz));
    assert_eq!(
        ArchiveKind::from_name("sd-bin-win-cpu-x64.zip"),
        Some(ArchiveKind::Zip)
    );
    assert_eq!(ArchiveKind::from_name("x.7z"), None);
}

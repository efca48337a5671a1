//! `docs/crd-reference.md` is the rendering of the generated CRD: a stale reference fails here.
//! `SWAPPO_UPDATE_CRD_REFERENCE=1` (what `make crds` sets) rewrites it instead.
use std::path::Path;

#[test]
fn the_field_reference_matches_the_generated_crd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crd = std::fs::read_to_string(root.join("crds/swappo.io_swappomessagings.yaml"))
        .expect("crds/swappo.io_swappomessagings.yaml exists (make crds)");
    let rendered = swappo_e2e::crd_reference::render(&crd).expect("the CRD renders");
    let doc = root.join("docs/crd-reference.md");
    if std::env::var_os("SWAPPO_UPDATE_CRD_REFERENCE").is_some() {
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(&doc, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&doc).unwrap_or_default();
    assert!(
        committed == rendered,
        "docs/crd-reference.md is stale: run `make crds` and commit the result"
    );
}

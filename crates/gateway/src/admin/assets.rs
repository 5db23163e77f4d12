//! The console's and the demo's static files, compiled into the binary by
//! `build.rs` from `crates/gateway/assets/`: plain HTML, CSS and ES
//! modules written for herald. Nothing is fetched at runtime, so the pages
//! work on an air-gapped network.

use actix_web::http::header;
use actix_web::HttpResponse;

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The Content-Security-Policy of every console and demo page: only the
/// node's own files, no inline script or style, no framing.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// A file of `table` by name, with its content type; `None` for an unknown name.
pub(crate) fn find(
    table: &[(&str, &'static [u8])],
    name: &str,
) -> Option<(&'static [u8], &'static str)> {
    let (_, bytes) = table.iter().find(|(file, _)| *file == name)?;
    Some((bytes, content_type(name)?))
}

fn content_type(name: &str) -> Option<&'static str> {
    Some(match name.rsplit_once('.')?.1 {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// The headers every console and demo response carries.
pub(crate) fn secure(
    builder: &mut actix_web::HttpResponseBuilder,
) -> &mut actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
}

/// `name` of `table` as a response, or 404.
pub(crate) fn serve(table: &[(&str, &'static [u8])], name: &str) -> HttpResponse {
    match find(table, name) {
        Some((bytes, content_type)) => secure(&mut HttpResponse::Ok())
            .content_type(content_type)
            .body(bytes),
        None => secure(&mut HttpResponse::NotFound())
            .content_type("text/plain; charset=utf-8")
            .body("not found\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_asset_dirs_is_embedded_with_a_content_type() {
        for (table, dir) in [(ADMIN, "assets/admin"), (DEMO, "assets/demo")] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            on_disk.sort();
            let embedded: Vec<String> = table.iter().map(|(n, _)| (*n).to_owned()).collect();
            assert_eq!(embedded, on_disk, "{}", dir.display());
            for name in &on_disk {
                assert!(content_type(name).is_some(), "{name} has no content type");
            }
            assert!(
                find(table, "index.html").is_some(),
                "{} has index.html",
                dir.display()
            );
        }
    }

    #[test]
    fn unknown_names_are_not_found() {
        assert!(find(ADMIN, "../Cargo.toml").is_none());
        assert!(find(ADMIN, "").is_none());
    }
}

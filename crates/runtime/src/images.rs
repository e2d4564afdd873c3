//! Images without pulling: which image references are built into the binary, what argv an image
//! plus a Pod's `command`/`args` runs, and the hidden `pier __image <name>` entry point.
//!
//! The built-in demo images are `luksa/kubia` (HTTP on 8080, `You've hit <hostname>`), `httpd`
//! and `nginx` (HTTP on 80) and the Kubernetes `pause` image. `busybox`, `alpine` and
//! `tutum/curl` run their command with the host's executables (with their images' default
//! command when there is none). Any other image needs a `command`.

use crate::error::ImageError;
use crate::{holder, http};

/// Where every pod sees the pier binary (the holder bind-mounts it there), so built-in images
/// run whatever filesystem the binary lives on.
pub const POD_PIER_EXE: &str = "/.pier/pier";

/// A demo image built into the pier binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// `luksa/kubia`: HTTP on 8080 answering `You've hit <hostname>\n`.
    Kubia,
    /// `httpd`: HTTP on 80 answering `<html><body><h1>It works!</h1></body></html>\n`.
    Httpd,
    /// `nginx`: HTTP on 80 with the nginx welcome page.
    Nginx,
    /// `registry.k8s.io/pause`: sleeps until SIGTERM.
    Pause,
}

impl Builtin {
    /// The name used on the command line: `pier __image <name>`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Kubia => "kubia",
            Builtin::Httpd => "httpd",
            Builtin::Nginx => "nginx",
            Builtin::Pause => "pause",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        [Builtin::Kubia, Builtin::Httpd, Builtin::Nginx, Builtin::Pause].into_iter().find(|b| b.name() == name)
    }

    /// The TCP port it serves on.
    pub fn port(self) -> Option<u16> {
        match self {
            Builtin::Kubia => Some(8080),
            Builtin::Httpd | Builtin::Nginx => Some(80),
            Builtin::Pause => None,
        }
    }

    /// The argv that runs it inside a pod.
    pub fn argv(self) -> Vec<String> {
        vec![POD_PIER_EXE.to_string(), "__image".to_string(), self.name().to_string()]
    }
}

/// What an image reference means here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ImageKind {
    Builtin(Builtin),
    /// Runs the host's tools; the image's default command when the Pod sets none.
    HostTools {
        default_cmd: &'static [&'static str],
    },
    Unknown,
}

/// The repository of a reference without registry, tag or digest, for Docker Hub images
/// (`docker.io/library/nginx:1.27` → `nginx`), or with its registry for others
/// (`registry.k8s.io/pause:3.9` → `registry.k8s.io/pause`).
fn repository(image: &str) -> Option<String> {
    let image = image.trim();
    if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let no_digest = image.split('@').next().unwrap_or(image);
    // A tag is a ':' after the last '/' (a ':' before it belongs to a registry's port).
    let no_tag = match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    };
    if no_tag.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = no_tag.split('/').collect();
    let has_registry = parts.len() > 1 && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost");
    if has_registry && matches!(parts[0], "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        parts.remove(0);
    } else if has_registry {
        return Some(no_tag.to_ascii_lowercase());
    }
    if parts.len() == 2 && parts[0] == "library" {
        parts.remove(0);
    }
    Some(parts.join("/").to_ascii_lowercase())
}

fn kind(image: &str) -> Option<ImageKind> {
    let repo = repository(image)?;
    Some(match repo.as_str() {
        "luksa/kubia" => ImageKind::Builtin(Builtin::Kubia),
        "httpd" => ImageKind::Builtin(Builtin::Httpd),
        "nginx" => ImageKind::Builtin(Builtin::Nginx),
        "registry.k8s.io/pause" | "k8s.gcr.io/pause" | "gcr.io/google_containers/pause" | "kubernetes/pause" => {
            ImageKind::Builtin(Builtin::Pause)
        }
        "busybox" => ImageKind::HostTools { default_cmd: &["sh"] },
        "alpine" => ImageKind::HostTools { default_cmd: &["/bin/sh"] },
        "tutum/curl" => ImageKind::HostTools { default_cmd: &["/bin/bash"] },
        _ => ImageKind::Unknown,
    })
}

/// The built-in image `image` refers to, if any (any tag or digest, with or without
/// `docker.io/library/`).
pub fn builtin_image(image: &str) -> Option<Builtin> {
    match kind(image) {
        Some(ImageKind::Builtin(b)) => Some(b),
        _ => None,
    }
}

/// The argv for a container of `image` with the Pod's `command` and `args`, with Kubernetes'
/// semantics: `command` replaces the image's entrypoint and `args` its default arguments.
pub fn resolve_argv(image: &str, command: &[String], args: &[String]) -> Result<Vec<String>, ImageError> {
    let kind = kind(image).ok_or_else(|| ImageError::InvalidReference { image: image.to_string() })?;
    if !command.is_empty() {
        return Ok(command.iter().chain(args).cloned().collect());
    }
    match kind {
        ImageKind::Builtin(b) => Ok(b.argv().into_iter().chain(args.iter().cloned()).collect()),
        ImageKind::HostTools { default_cmd } if args.is_empty() => {
            Ok(default_cmd.iter().map(|s| s.to_string()).collect())
        }
        // These images have no entrypoint: args replace their default command.
        ImageKind::HostTools { .. } => Ok(args.to_vec()),
        ImageKind::Unknown => Err(ImageError::NoEntrypoint { image: image.to_string() }),
    }
}

/// The entry point of `pier __image <name> [args...]`: runs a built-in image (or, for the
/// hidden name `pier-sandbox`, a pod's sandbox holder) and ends the process with its exit code.
///
/// Call it first thing in `main`, before any thread or async runtime starts: the sandbox holder
/// creates namespaces, which only works in a single-threaded process. The web servers run on a
/// runtime of their own.
#[allow(clippy::disallowed_methods)] // This is a process entry point: ending the process is its job.
pub fn run_builtin(name: &str, args: &[String]) -> ! {
    let code = match name {
        holder::HOLDER_IMAGE => holder::run(),
        _ => match Builtin::from_name(name) {
            Some(Builtin::Pause) => holder::wait_for_termination(),
            Some(b) => http::run(b, args),
            None => {
                eprintln!("pier: no built-in image named {name:?}");
                127
            }
        },
    };
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn recognises_the_builtins_under_any_spelling() {
        for image in ["luksa/kubia", "luksa/kubia:v2", "docker.io/luksa/kubia:latest", "luksa/kubia@sha256:abcd"] {
            assert_eq!(builtin_image(image), Some(Builtin::Kubia), "{image}");
        }
        for image in ["httpd", "httpd:2.4", "library/httpd", "docker.io/library/httpd:alpine", "index.docker.io/httpd"]
        {
            assert_eq!(builtin_image(image), Some(Builtin::Httpd), "{image}");
        }
        for image in ["nginx", "nginx:1.27-alpine", "docker.io/library/nginx", "docker.io/nginx:latest"] {
            assert_eq!(builtin_image(image), Some(Builtin::Nginx), "{image}");
        }
        assert_eq!(builtin_image("registry.k8s.io/pause:3.10"), Some(Builtin::Pause));
        for image in
            ["busybox", "bitnami/nginx", "luksa/kubia-unhealthy", "quay.io/nginx", "localhost:5000/nginx", "", "ngi nx"]
        {
            assert_eq!(builtin_image(image), None, "{image}");
        }
    }

    #[test]
    fn argv_follows_kubernetes_command_and_args() {
        assert_eq!(resolve_argv("luksa/kubia", &[], &[]), Ok(s(&[POD_PIER_EXE, "__image", "kubia"])));
        assert_eq!(resolve_argv("nginx", &s(&["sh", "-c"]), &s(&["echo hi"])), Ok(s(&["sh", "-c", "echo hi"])));
        assert_eq!(resolve_argv("busybox", &[], &[]), Ok(s(&["sh"])));
        assert_eq!(resolve_argv("busybox:1.36", &[], &s(&["sleep", "3600"])), Ok(s(&["sleep", "3600"])));
        assert_eq!(resolve_argv("tutum/curl", &s(&["sleep", "9999999"]), &[]), Ok(s(&["sleep", "9999999"])));
        assert_eq!(resolve_argv("anything/else:1", &s(&["/bin/true"]), &[]), Ok(s(&["/bin/true"])));
    }

    #[test]
    fn an_unknown_image_without_command_says_what_to_do() {
        let err = resolve_argv("foo", &[], &s(&["x"])).expect_err("nothing to run");
        assert_eq!(err.to_string(), r#"image "foo" has no built-in entrypoint: set command"#);
        assert!(matches!(resolve_argv("", &[], &[]), Err(ImageError::InvalidReference { .. })));
    }

    #[test]
    fn builtin_names_round_trip() {
        for b in [Builtin::Kubia, Builtin::Httpd, Builtin::Nginx, Builtin::Pause] {
            assert_eq!(Builtin::from_name(b.name()), Some(b));
        }
        assert_eq!(Builtin::from_name(holder::HOLDER_IMAGE), None, "the holder is not a user-visible image");
    }
}

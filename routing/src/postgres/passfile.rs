//! libpq's password file (`~/.pgpass`, `PGPASSFILE`, the `passfile`
//! parameter), so the password can live in a file a secret is mounted as
//! rather than in the URL.
//!
//! Each line is `host:port:database:user:password`; `#` starts a comment
//! line. A field of just `*` matches anything; `\` escapes the next
//! character (`\:`, `\\`, `\*`). The first line whose four fields match
//! gives the password. As in libpq, a host given as a Unix socket
//! directory (or not at all) is looked up as `localhost`, the port
//! defaults to 5432 and the database to the user name; only the first host
//! of a multi-host URL is looked up.

use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio_postgres::config::Host;

/// What a line must match: the connection's host, port, database and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub host: String,
    pub port: String,
    pub database: String,
    pub user: String,
}

impl Wanted {
    /// What `config` connects to first, spelled as libpq looks it up.
    pub fn of(config: &tokio_postgres::Config) -> Self {
        let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
            (Some(Host::Tcp(host)), _) if !host.is_empty() => host.clone(),
            (None, Some(addr)) => addr.to_string(),
            _ => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or_default().to_owned();
        Wanted {
            host,
            port: port.to_string(),
            database: config.get_dbname().unwrap_or(&user).to_owned(),
            user,
        }
    }
}

/// The file's text; `None` when it is missing and was not `named` (the
/// default `~/.pgpass`). An error says why the file cannot be used.
pub fn read(path: &Path, named: bool) -> Result<Option<String>, String> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    if !metadata.is_file() {
        return Err("is not a plain file".into());
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "group or others may read it (mode {mode:04o}); make it u=rw (0600) or less"
        ));
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| format!("cannot read it: {e}"))
}

/// The password of the first line of `contents` that matches `wanted`.
pub fn find(contents: &str, wanted: &Wanted) -> Option<String> {
    let targets = [&wanted.host, &wanted.port, &wanted.database, &wanted.user];
    contents
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(fields)
        .filter(|fields| fields.len() >= 5)
        .find(|fields| {
            fields
                .iter()
                .zip(targets)
                .all(|(field, target)| field.matches(target))
        })
        .map(|mut fields| fields.swap_remove(4).text)
}

/// One field of a line: its text with the escapes removed, and whether it
/// was the wildcard (a `*` alone, not `\*`).
#[derive(Debug, PartialEq, Eq)]
struct Field {
    text: String,
    wildcard: bool,
}

impl Field {
    fn matches(&self, target: &str) -> bool {
        self.wildcard || self.text == target
    }
}

/// The fields of `line`, split at every `:` that is not escaped.
fn fields(line: &str) -> Vec<Field> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = Vec::new();
    let (mut text, mut raw) = (String::new(), String::new());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ':' => fields.push(field(std::mem::take(&mut text), &std::mem::take(&mut raw))),
            '\\' => {
                raw.push(c);
                if let Some(escaped) = chars.next() {
                    raw.push(escaped);
                    text.push(escaped);
                }
            }
            _ => {
                raw.push(c);
                text.push(c);
            }
        }
    }
    fields.push(field(text, &raw));
    fields
}

fn field(text: String, raw: &str) -> Field {
    Field {
        wildcard: raw == "*",
        text,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn wanted(host: &str, port: &str, database: &str, user: &str) -> Wanted {
        Wanted {
            host: host.into(),
            port: port.into(),
            database: database.into(),
            user: user.into(),
        }
    }

    const FILE: &str = "\
# host:port:database:user:password
db.internal:5432:roost:roost:first
*:5433:*:roost:other-port
*:*:*:admin:any-host
db\\:odd:5432:roost:roost:colon-host
*:*:*:st\\*r:literal-star
*:*:*:colons:pass\\:word\\\\x
";

    #[test]
    fn the_first_matching_line_gives_the_password() {
        let find = |w: Wanted| find(FILE, &w);
        assert_eq!(
            find(wanted("db.internal", "5432", "roost", "roost")).as_deref(),
            Some("first")
        );
        assert_eq!(
            find(wanted("elsewhere", "5433", "x", "roost")).as_deref(),
            Some("other-port")
        );
        assert_eq!(
            find(wanted("h", "1", "d", "admin")).as_deref(),
            Some("any-host")
        );
        assert_eq!(find(wanted("elsewhere", "5432", "roost", "roost")), None);
    }

    #[test]
    fn escapes_are_literal_characters_and_an_escaped_star_is_no_wildcard() {
        assert_eq!(
            find(FILE, &wanted("db:odd", "5432", "roost", "roost")).as_deref(),
            Some("colon-host")
        );
        assert_eq!(
            find(FILE, &wanted("h", "1", "d", "st*r")).as_deref(),
            Some("literal-star")
        );
        assert_eq!(find(FILE, &wanted("h", "1", "d", "stxr")), None);
        assert_eq!(
            find(FILE, &wanted("h", "1", "d", "colons")).as_deref(),
            Some("pass:word\\x")
        );
    }

    #[test]
    fn short_lines_comments_and_carriage_returns() {
        let file = "#*:*:*:*:commented\n*:*:*:short\r\n*:*:*:*:crlf\r\n";
        assert_eq!(
            find(file, &wanted("h", "1", "d", "u")).as_deref(),
            Some("crlf")
        );
    }

    #[test]
    fn the_connection_is_looked_up_as_libpq_spells_it() {
        let config: tokio_postgres::Config = "postgres://roost@db.internal/roost".parse().unwrap();
        assert_eq!(
            Wanted::of(&config),
            wanted("db.internal", "5432", "roost", "roost")
        );
        let config: tokio_postgres::Config = "postgres://roost@:6543?host=/var/run/postgresql"
            .parse()
            .unwrap();
        assert_eq!(
            Wanted::of(&config),
            wanted("localhost", "6543", "roost", "roost")
        );
    }

    #[test]
    fn a_file_others_may_read_is_refused_and_a_missing_default_is_not_an_error() {
        let dir = crate::postgres::TestDir::new("pgpass");
        let open = dir.file("open", "*:*:*:*:pw\n", 0o644);
        let private = dir.file("private", "*:*:*:*:pw\n", 0o600);
        let refused = read(&open, true).unwrap_err();
        assert!(refused.contains("mode 0644"), "{refused}");
        assert_eq!(
            read(&private, true).unwrap().as_deref(),
            Some("*:*:*:*:pw\n")
        );
        let missing = private.with_file_name("missing");
        assert_eq!(read(&missing, false), Ok(None));
        assert!(read(&missing, true)
            .unwrap_err()
            .starts_with("cannot read it"));
    }
}

/// A mailbox `local@domain` from an envelope path; the domain is lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part, as sent (case kept: only the domain is case-insensitive).
    pub local: String,
    /// The domain, lower-cased; empty for the bare `<postmaster>`.
    pub domain: String,
}

impl Mailbox {
    /// The bare `<postmaster>` recipient that RFC 5321 section 4.5.1 requires every server to
    /// accept, with no domain.
    pub fn is_bare_postmaster(&self) -> bool {
        self.domain.is_empty() && self.local.eq_ignore_ascii_case("postmaster")
    }

    /// The address as Tern names users: lower-cased `local@domain`.
    pub fn user_name(&self) -> String {
        format!("{}@{}", self.local.to_lowercase(), self.domain)
    }
}

impl std::fmt::Display for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.domain.is_empty() {
            return write!(f, "{}", self.local);
        }
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Why a path was refused (for the 501 reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub &'static str);

/// Parses the argument of `MAIL FROM:` or `RCPT TO:` after the colon: a path in angle brackets
/// (a bare address is tolerated) followed by optional ESMTP parameters. Returns `None` as the
/// mailbox for the null reverse-path `<>`.
/// ESMTP parameters as `(KEYWORD, value)`, keywords upper-cased.
pub type Params = Vec<(String, Option<String>)>;

/// Parses `<path> [PARAM[=value] ...]` after `MAIL FROM:` or `RCPT TO:`; the null path `<>` gives `None`.
pub fn parse_path(arg: &str) -> Result<(Option<Mailbox>, Params), PathError> {
    let arg = arg.trim_start();
    let (path, rest) = if let Some(inner) = arg.strip_prefix('<') {
        let end = find_closing(inner).ok_or(PathError("missing '>' after the address"))?;
        (&inner[..end], &inner[end + 1..])
    } else {
        match arg.find(' ') {
            Some(i) => (&arg[..i], &arg[i..]),
            None => (arg, ""),
        }
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(PathError(
            "expected a space between the address and its parameters",
        ));
    }
    let mut params = Vec::new();
    for p in rest.split_ascii_whitespace() {
        let (k, v) = match p.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (p, None),
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(PathError("malformed parameter"));
        }
        params.push((k.to_ascii_uppercase(), v));
    }
    if path.is_empty() {
        return Ok((None, params));
    }
    // Drop an obsolete source route (RFC 5321 section 4.1.2: "@a,@b:user@d").
    let path = match (path.starts_with('@'), path.find(':')) {
        (true, Some(i)) => &path[i + 1..],
        _ => path,
    };
    Ok((Some(parse_mailbox(path)?), params))
}

fn find_closing(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_mailbox(s: &str) -> Result<Mailbox, PathError> {
    if s.chars().any(|c| c.is_control()) {
        return Err(PathError("control characters in address"));
    }
    if s.eq_ignore_ascii_case("postmaster") {
        return Ok(Mailbox {
            local: "postmaster".into(),
            domain: String::new(),
        });
    }
    let at = s.rfind('@').ok_or(PathError("address needs user@domain"))?;
    let (local, domain) = (&s[..at], &s[at + 1..]);
    if local.is_empty() || local.len() > 64 {
        return Err(PathError("local part must be 1 to 64 octets"));
    }
    if !local.starts_with('"')
        && local.contains([' ', '<', '>', '(', ')', ',', ';', ':', '\\', '"', '[', ']'])
    {
        return Err(PathError("invalid character in local part"));
    }
    if domain.is_empty() || domain.len() > 255 {
        return Err(PathError("domain must be 1 to 255 octets"));
    }
    let literal = domain.starts_with('[') && domain.ends_with(']');
    if !literal
        && !domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80)
    {
        return Err(PathError("invalid character in domain"));
    }
    Ok(Mailbox {
        local: local.to_string(),
        domain: domain.to_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let (m, p) = parse_path("<Alice@Example.COM> SIZE=100 BODY=8BITMIME").unwrap();
        let m = m.unwrap();
        assert_eq!(
            (m.local.as_str(), m.domain.as_str()),
            ("Alice", "example.com")
        );
        assert_eq!(m.user_name(), "alice@example.com");
        assert_eq!(
            p,
            vec![
                ("SIZE".into(), Some("100".into())),
                ("BODY".into(), Some("8BITMIME".into()))
            ]
        );
        assert_eq!(parse_path("<>").unwrap().0, None);
        assert_eq!(
            parse_path(" <@relay,@r2:bob@x.org>")
                .unwrap()
                .0
                .unwrap()
                .user_name(),
            "bob@x.org"
        );
        assert_eq!(
            parse_path("<\"a b\"@x>").unwrap().0.unwrap().local,
            "\"a b\""
        );
        assert_eq!(parse_path("bob@x").unwrap().0.unwrap().user_name(), "bob@x");
        assert!(parse_path("<PostMaster>")
            .unwrap()
            .0
            .unwrap()
            .is_bare_postmaster());
    }

    #[test]
    fn bad_paths() {
        for bad in [
            "<bob>",
            "<bob@x",
            "<@x>",
            "<a b@x>",
            "<bob@x>SIZE=1",
            "<bob@exa mple>",
            "<bob@x\r>",
        ] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}

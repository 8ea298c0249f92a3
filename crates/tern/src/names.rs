//! What Tern accepts as a domain or a user name. Users are always named by their full address
//! and compared lower-cased, in the directory, at SMTP RCPT and at POP3 login alike.

/// A DNS domain name: labels of letters, digits and hyphens, 1 to 253 octets.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The form a user name is stored and compared in: trimmed and lower-cased (users log in with
/// their address in any case; SMTP's `Mailbox::user_name` gives the same form).
pub fn normalize_user(name: &str) -> String {
    name.trim().to_lowercase()
}

/// Splits and checks `local@domain` (lower-cased); `None` if it is not a plain address.
pub fn parse_user(name: &str) -> Option<(String, String)> {
    let name = normalize_user(name);
    let (local, domain) = name.rsplit_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    (local_ok && valid_domain(domain)).then(|| (local.to_string(), domain.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(valid_domain("example.com") && valid_domain("localhost") && valid_domain("a-b.c1"));
        for bad in ["", "-a.com", "a..com", "a_b.com", "exa mple.com", "a.com."] {
            assert!(!valid_domain(bad), "{bad}");
        }
    }

    #[test]
    fn users() {
        assert_eq!(
            parse_user("Alice@Example.com"),
            Some(("alice".into(), "example.com".into()))
        );
        assert!(parse_user("a.b+tag@x.org").is_some());
        for bad in [
            "alice",
            "@x.org",
            "a b@x.org",
            "a@",
            ".a@x",
            "a..b@x",
            "a@-x",
        ] {
            assert!(parse_user(bad).is_none(), "{bad}");
        }
    }
}

//! The kernel command line, split the way the kernel's `next_arg()` does (double quotes group
//! spaces; `"a=b c"` and `a="b c"` both give `a` = `b c`), and BOOTIF, which PXELINUX/iPXE put
//! there as `BOOTIF=01-aa-bb-cc-dd-ee-ff` (ARP hardware type 1, then the MAC).

/// (key, value) pairs in order; a bare word has value `None`.
pub fn parse(cmdline: &str) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    let mut chars = cmdline.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut in_quote = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !in_quote {
                break;
            }
            chars.next();
            if c == '"' {
                in_quote = !in_quote;
            } else {
                word.push(c);
            }
        }
        match word.split_once('=') {
            Some((k, v)) => out.push((k.to_string(), Some(v.to_string()))),
            None => out.push((word, None)),
        }
    }
    out
}

/// The last value of `key` (the kernel and IPA let later parameters win).
pub fn get<'a>(params: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
}

/// Normalises a BOOTIF value to `aa:bb:cc:dd:ee:ff`. Accepts `01-aa-bb-…` (PXELINUX),
/// `aa-bb-…` and `aa:bb:…`, any case.
pub fn parse_bootif(value: &str) -> Option<String> {
    let v = value.trim();
    let parts: Vec<&str> = v.split(['-', ':']).collect();
    let mac = match parts.len() {
        7 if parts[0] == "01" => &parts[1..],
        6 => &parts[..],
        _ => return None,
    };
    if mac
        .iter()
        .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Some(mac.join(":").to_ascii_lowercase())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_bare_words() {
        let p = parse(
            r#"ro quiet  root=/dev/sda1 "dyndbg=file a.c +p" opt="x y" BOOTIF=01-AA-bb-cc-dd-ee-ff -- init=1"#,
        );
        assert_eq!(p[0], ("ro".into(), None));
        assert_eq!(get(&p, "root"), Some("/dev/sda1"));
        assert_eq!(get(&p, "dyndbg"), Some("file a.c +p"));
        assert_eq!(get(&p, "opt"), Some("x y"));
        assert_eq!(get(&p, "BOOTIF"), Some("01-AA-bb-cc-dd-ee-ff"));
        assert_eq!(get(&p, "init"), Some("1"));
        assert_eq!(get(&p, "quiet"), None);
        // An unterminated quote runs to the end instead of panicking.
        assert_eq!(get(&parse("a=\"b c"), "a"), Some("b c"));
    }

    #[test]
    fn later_wins() {
        let p = parse("BOOTIF=01-00-00-00-00-00-01 BOOTIF=01-00-00-00-00-00-02");
        assert_eq!(get(&p, "BOOTIF"), Some("01-00-00-00-00-00-02"));
    }

    #[test]
    fn bootif_forms() {
        assert_eq!(
            parse_bootif("01-AA-bb-cc-dd-ee-ff").as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(
            parse_bootif("aa:bb:cc:dd:ee:ff").as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(
            parse_bootif("aa-bb-cc-dd-ee-ff").as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(parse_bootif("02-aa-bb-cc-dd-ee-ff"), None);
        assert_eq!(parse_bootif("aa:bb:cc:dd:ee"), None);
        assert_eq!(parse_bootif("zz:bb:cc:dd:ee:ff"), None);
        assert_eq!(parse_bootif(""), None);
    }
}

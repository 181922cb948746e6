//! `.dockerignore` matching with Docker's rules: patterns are relative to the context root,
//! `*` and `?` stay within one path segment, `**` spans any number of segments, `!` re-includes,
//! the last matching pattern wins, and a pattern that matches a directory covers what is in it.

pub struct DockerIgnore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl DockerIgnore {
    pub fn parse(text: &str) -> Self {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (negated, p) = match l.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, l),
                };
                let segments = p
                    .trim_start_matches('/')
                    .trim_end_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect();
                (negated, segments)
            })
            .collect();
        Self { patterns }
    }

    /// Whether `path` (relative, `/`-separated) is excluded from the build context.
    pub fn excluded(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (negated, pattern) in &self.patterns {
            // A pattern matching the path or any of its parent directories applies.
            let hit = (1..=parts.len()).any(|n| match_segments(pattern, &parts[..n]));
            if hit {
                excluded = !negated;
            }
        }
        excluded
    }

    /// Whether some `!pattern` could re-include a path below `dir`, so the walk must go in.
    pub fn has_exceptions_under(&self, dir: &str) -> bool {
        let depth = dir.split('/').filter(|s| !s.is_empty()).count();
        self.patterns.iter().any(|(negated, p)| *negated && (p.len() > depth || p.iter().any(|s| s == "**")))
    }
}

fn match_segments(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((seg, more)) => glob(first.as_bytes(), seg.as_bytes()) && match_segments(rest, more),
            None => false,
        },
    }
}

/// Matches one segment against `*`, `?`, `[...]` and `\` escapes.
fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob(rest, &s[1..]),
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == b']') else {
                return !s.is_empty() && s[0] == b'[' && glob(rest, &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let (negate, class) = match rest[..end].split_first() {
                Some((b'^' | b'!', cls)) => (true, cls),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && glob(&rest[end + 1..], &s[1..])
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            !s.is_empty() && s[0] == rest[0] && glob(&rest[1..], &s[1..])
        }
        Some((&c, rest)) => !s.is_empty() && s[0] == c && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_dockers_rules() {
        let di =
            DockerIgnore::parse("# comment\nnode_modules\n*.log\n/target/\n**/*.tmp\n!keep.log\ndocs/*.md\n");
        assert!(di.excluded("node_modules"));
        assert!(di.excluded("node_modules/x/y.js"), "a matched directory covers its contents");
        assert!(di.excluded("app.log"));
        assert!(!di.excluded("keep.log"), "the last matching pattern wins");
        assert!(!di.excluded("sub/app.log"), "* does not cross directories");
        assert!(di.excluded("target/debug/x"));
        assert!(di.excluded("a/b/c.tmp") && di.excluded("c.tmp"));
        assert!(di.excluded("docs/readme.md") && !di.excluded("docs/sub/readme.md"));
        assert!(!di.excluded("src/main.rs"));
    }

    #[test]
    fn classes_and_question_marks() {
        let di = DockerIgnore::parse("file?.[a-c]\n[!x]y");
        assert!(di.excluded("file1.b") && !di.excluded("file1.d") && !di.excluded("file12.a"));
        assert!(di.excluded("zy") && !di.excluded("xy"));
    }
}

//! CLIP's byte-level BPE tokenizer, the same as open_clip's `SimpleTokenizer` (clean = "lower"):
//! the same text cleaning (the parts of `ftfy.fix_text` that apply to text typed into a search
//! box, HTML unescaping, whitespace folding, lower case), the same pre-tokenizing regex, the same
//! merges, 77 tokens with truncation (the last kept token becomes end-of-text).
//!
//! The merges are open_clip's `bpe_simple_vocab_16e6.txt.gz`, which ships in the
//! `open-clip-torch` package: `scripts/fetch-clip-vocab` copies it to
//! [`DEFAULT_VOCAB`](super::DEFAULT_VOCAB). Parity with open_clip on 1 304 strings (unicode,
//! emoji, entities, very long text, corner cases of ftfy and of the regex) is checked against `tests/fixtures/clip/tokenizer.json`.
//!
//! Not reproduced from ftfy: its mojibake repair (`fix_encoding`: text that was decoded with the
//! wrong code page, like "cafÃ©"), which guesses from statistics of whole strings.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// open_clip's pre-tokenizing regex, compiled by Python's `regex` with `IGNORECASE`. Case
/// folding there applies to the literals and to the negated class, never to the letter class:
/// U+0345 (whose case folds to iota) is neither a letter nor "other", so it splits words and is
/// dropped. Rust's `(?i)` would fold `\p{L}` too and admit U+0345 as a letter; it is kept to the
/// literals and the negated class (folded, then negated, as Python's).
const PATTERN: &str = r"(?i:<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d)|\p{L}+|\p{N}|(?i:[^\s\p{L}\p{N}])+";

/// CLIP's context length.
pub const CONTEXT: usize = 77;
/// Merges used by open_clip (`merges[1 : 49152 - 256 - 2 + 1]`).
const MERGES: usize = 49152 - 256 - 2;
/// Entries kept in the word cache before it is cleared (queries are short; this bounds memory).
const CACHE_MAX: usize = 16_384;

pub struct Tokenizer {
    encoder: HashMap<String, u32>,
    /// Merge rank by "left right".
    ranks: HashMap<String, u32>,
    byte_encoder: [char; 256],
    pat: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
    pub sot: u32,
    pub eot: u32,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.encoder.len()).finish()
    }
}

impl Tokenizer {
    /// Load the merges file (gzip as shipped by open_clip, or already unpacked). Errors are
    /// reasons for the caller to wrap with the path.
    pub fn load(path: &Path) -> Result<Tokenizer, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut s).map_err(|e| format!("not a readable gzip file: {e}"))?;
            s
        } else {
            String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?
        };
        Self::from_merges(&text)
    }

    pub fn from_merges(text: &str) -> Result<Tokenizer, String> {
        let lines: Vec<&str> = text.split('\n').collect();
        if lines.len() < MERGES + 1 {
            return Err(format!("expected at least {} merge lines, found {}", MERGES + 1, lines.len()));
        }
        let merges = &lines[1..MERGES + 1];
        let byte_encoder = bytes_to_unicode();
        // In the order of Python's `bytes_to_unicode().values()`: printable bytes first.
        let order: Vec<char> =
            (0..256).filter(|b| is_printable_byte(*b)).chain((0..256).filter(|b| !is_printable_byte(*b))).map(|b| byte_encoder[b as usize]).collect();
        let mut vocab: Vec<String> = order.iter().map(|c| c.to_string()).collect();
        vocab.extend(order.iter().map(|c| format!("{c}</w>")));
        let mut ranks = HashMap::with_capacity(MERGES);
        for (rank, line) in merges.iter().enumerate() {
            let mut parts = line.split_whitespace();
            let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("merge line {} is not two symbols: {line:?}", rank + 2));
            };
            vocab.push(format!("{a}{b}"));
            ranks.insert(format!("{a} {b}"), rank as u32);
        }
        vocab.push("<start_of_text>".into());
        vocab.push("<end_of_text>".into());
        let n = vocab.len();
        // Like Python's dict(zip(vocab, range)): a later duplicate wins.
        let encoder: HashMap<String, u32> = vocab.into_iter().enumerate().map(|(i, v)| (v, i as u32)).collect();
        let pat = Regex::new(PATTERN).expect("static regex");
        Ok(Tokenizer { encoder, ranks, byte_encoder, pat, cache: Mutex::new(HashMap::new()), sot: (n - 2) as u32, eot: (n - 1) as u32 })
    }

    pub fn vocab_size(&self) -> usize {
        self.encoder.len()
    }

    /// Token ids of the cleaned text, without start/end markers.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let cleaned = clean(text);
        let mut out = Vec::new();
        for m in self.pat.find_iter(&cleaned) {
            let piece = m.as_str();
            if piece == "<start_of_text>" {
                out.push(self.sot);
                continue;
            }
            if piece == "<end_of_text>" {
                out.push(self.eot);
                continue;
            }
            let word: String = piece.bytes().map(|b| self.byte_encoder[b as usize]).collect();
            if let Some(ids) = self.cache.lock().expect("cache").get(&word) {
                out.extend_from_slice(ids);
                continue;
            }
            let ids: Vec<u32> = self.bpe(&word).iter().map(|s| self.encoder.get(s.as_str()).copied().unwrap_or(0)).collect();
            out.extend_from_slice(&ids);
            let mut cache = self.cache.lock().expect("cache");
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(word, ids);
        }
        out
    }

    /// `[sot] + encode(text) + [eot]`, truncated to [`CONTEXT`] with end-of-text last; no
    /// padding (the text tower pads).
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut t = Vec::with_capacity(CONTEXT);
        t.push(self.sot);
        t.extend(self.encode(text));
        t.push(self.eot);
        if t.len() > CONTEXT {
            t.truncate(CONTEXT);
            t[CONTEXT - 1] = self.eot;
        }
        t
    }

    fn bpe(&self, token: &str) -> Vec<String> {
        let chars: Vec<char> = token.chars().collect();
        let mut word: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        }
        if word.len() < 2 {
            return word;
        }
        loop {
            let mut best: Option<(u32, usize)> = None;
            for i in 0..word.len() - 1 {
                if let Some(&r) = self.ranks.get(&format!("{} {}", word[i], word[i + 1]))
                    && best.is_none_or(|(b, _)| r < b)
                {
                    best = Some((r, i));
                }
            }
            let Some((_, at)) = best else { break };
            let (first, second) = (word[at].clone(), word[at + 1].clone());
            // Merge every occurrence of the pair, left to right (as the Python loop does).
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut word[i]));
                    i += 1;
                }
            }
            word = merged;
            if word.len() == 1 {
                break;
            }
        }
        word
    }
}

/// GPT-2's reversible byte → printable character map.
fn is_printable_byte(b: u32) -> bool {
    (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b)
}

fn bytes_to_unicode() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut n = 0;
    for b in 0..256u32 {
        map[b as usize] = if is_printable_byte(b) {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("valid")
        };
    }
    map
}

/// open_clip's "lower" cleaning: `whitespace_clean(basic_clean(text)).lower()`.
pub fn clean(text: &str) -> String {
    let fixed = ftfy(text);
    let unescaped = html_unescape(&html_unescape(&fixed));
    let folded = unescaped.split(py_is_space).filter(|s| !s.is_empty()).collect::<Vec<_>>().join(" ");
    folded.to_lowercase()
}

/// Python's `str.isspace` (Unicode White_Space plus the ASCII separators U+001C–U+001F).
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// `ftfy.fix_text` (6.3, default config) without `fix_encoding`: HTML entities (unless the text
/// has a `<`), C1 controls as Windows-1252, Latin ligatures, full/half-width forms, curly
/// quotes, line breaks, terminal escapes, control characters, NFC — repeated until stable, line
/// by line as ftfy does. HTML is unescaped until the first line that has a `<`: from that line
/// on (ftfy replaces its config and keeps it for the rest of the text) entities stay.
fn ftfy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    for segment in text.split_inclusive('\n') {
        let mut s = segment.to_string();
        unescape &= !s.contains('<');
        loop {
            let orig = s.clone();
            if unescape {
                s = ftfy_unescape(&s);
            }
            s = s.chars().map(fix_c1).collect();
            s = s.chars().flat_map(fix_char).collect();
            s = fix_line_breaks(&s);
            s = remove_terminal_escapes(&s);
            s = s.chars().filter(|c| !is_ftfy_control(*c)).collect();
            s = s.nfc().collect();
            if s == orig {
                break;
            }
        }
        out.push_str(&s);
    }
    out
}

/// Windows-1252 for the C1 controls (ftfy's "sloppy" decoder: unassigned bytes stay).
fn fix_c1(c: char) -> char {
    const CP1252: [u16; 32] = [
        0x20AC, 0x81, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x8D, 0x017D, 0x8F, 0x90, 0x2018, 0x2019, 0x201C,
        0x201D, 0x2022, 0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x9D, 0x017E, 0x0178,
    ];
    match c as u32 {
        v @ 0x80..=0x9f => char::from_u32(CP1252[(v - 0x80) as usize] as u32).unwrap_or(c),
        _ => c,
    }
}

/// Ligatures, character width, curly quotes (one character to its replacement).
fn fix_char(c: char) -> Vec<char> {
    let lig: Option<&str> = match c {
        '\u{132}' => Some("IJ"),
        '\u{133}' => Some("ij"),
        '\u{149}' => Some("\u{2bc}n"),
        '\u{1f1}' => Some("DZ"),
        '\u{1f2}' => Some("Dz"),
        '\u{1f3}' => Some("dz"),
        '\u{1c4}' => Some("D\u{17d}"),
        '\u{1c5}' => Some("D\u{17e}"),
        '\u{1c6}' => Some("d\u{17e}"),
        '\u{1c7}' => Some("LJ"),
        '\u{1c8}' => Some("Lj"),
        '\u{1c9}' => Some("lj"),
        '\u{1ca}' => Some("NJ"),
        '\u{1cb}' => Some("Nj"),
        '\u{1cc}' => Some("nj"),
        '\u{fb00}' => Some("ff"),
        '\u{fb01}' => Some("fi"),
        '\u{fb02}' => Some("fl"),
        '\u{fb03}' => Some("ffi"),
        '\u{fb04}' => Some("ffl"),
        '\u{fb05}' => Some("\u{17f}t"),
        '\u{fb06}' => Some("st"),
        _ => None,
    };
    if let Some(s) = lig {
        return s.chars().collect();
    }
    match c as u32 {
        0x3000 => vec![' '],
        0xff01..=0xffee => std::iter::once(c).nfkc().collect(),
        0x02bc | 0x2018..=0x201b => vec!['\''],
        0x201c..=0x201f => vec!['"'],
        _ => vec![c],
    }
}

fn fix_line_breaks(s: &str) -> String {
    s.replace("\r\n", "\n").replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ANSI escapes `ESC [ (digits|;)* letter`; a digit is any Unicode decimal digit (`\p{Nd}`), as
/// Python's `\d` in ftfy's `ANSI_RE`.
fn remove_terminal_escapes(s: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"\x1b\[(?:\d|;)*[a-zA-Z]").expect("static regex"));
    re.replace_all(s, "").into_owned()
}

/// ftfy's `CONTROL_CHARS`.
fn is_ftfy_control(c: char) -> bool {
    matches!(c as u32, 0x0..=0x8 | 0xb | 0xe..=0x1f | 0x7f | 0x206a..=0x206f | 0xfeff | 0xfff9..=0xfffc)
}

fn entities() -> &'static HashMap<&'static str, String> {
    static TABLE: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        include_str!("html5_entities.tsv")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, cps) = l.split_once('\t')?;
                let value: String = cps.split(' ').filter_map(|h| u32::from_str_radix(h, 16).ok().and_then(char::from_u32)).collect();
                Some((name, value))
            })
            .collect()
    })
}

/// ftfy's `unescape_html`: `&name;` (and its upper-case form) and numeric references that
/// resolve; anything else stays.
fn ftfy_unescape(s: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("static regex"));
    re.replace_all(s, |caps: &regex::Captures| {
        let text = &caps[0];
        let name = &text[1..];
        if let Some(v) = entities().get(name) {
            return v.clone();
        }
        let lower = name.to_lowercase();
        if name == lower.to_uppercase()
            && lower != name
            && let Some(v) = entities().get(lower.as_str())
            && html_unescape(text) == text
        {
            return v.to_uppercase();
        }
        if text.starts_with("&#") {
            let u = html_unescape(text);
            if !u.contains(';') {
                return u;
            }
        }
        text.to_string()
    })
    .into_owned()
}

/// Python's `html.unescape`.
pub(crate) fn html_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| Regex::new(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\x0c <&#;]{1,32};?)").expect("static regex"));
    re.replace_all(s, |caps: &regex::Captures| {
        let r = &caps[1];
        if let Some(num) = r.strip_prefix('#') {
            let (digits, radix) = match num.strip_prefix(['x', 'X']) {
                Some(h) => (h, 16),
                None => (num, 10),
            };
            let digits = digits.trim_end_matches(';');
            let n = u64::from_str_radix(digits, radix).unwrap_or(u64::MAX);
            return numeric_charref(n);
        }
        if let Some(v) = entities().get(r) {
            return v.clone();
        }
        for x in (2..r.len()).rev() {
            if r.is_char_boundary(x)
                && let Some(v) = entities().get(&r[..x])
            {
                return format!("{v}{}", &r[x..]);
            }
        }
        format!("&{r}")
    })
    .into_owned()
}

fn numeric_charref(n: u64) -> String {
    if n == 0 {
        return "\u{fffd}".into();
    }
    if n == 0x0d {
        return "\r".into();
    }
    if (0x80..=0x9f).contains(&n) {
        return fix_c1(char::from_u32(n as u32).expect("C1")).to_string();
    }
    if (0xd800..=0xdfff).contains(&n) || n > 0x10ffff {
        return "\u{fffd}".into();
    }
    let invalid = matches!(n, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef) || (n & 0xfffe) == 0xfffe;
    if invalid {
        return String::new();
    }
    char::from_u32(n as u32).map(String::from).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_follows_open_clip() {
        assert_eq!(clean("  Hello\t\nWORLD  "), "hello world");
        assert_eq!(clean("Tom &amp;amp; Jerry"), "tom & jerry");
        assert_eq!(clean("“curly” don’t ﬁsh"), "\"curly\" don't fish");
        assert_eq!(clean("ＦＵＬＬ　ｗｉｄｔｈ"), "full width");
        assert_eq!(clean("e\u{301}"), "\u{e9}");
        assert_eq!(clean("bell\x07 \x1b[31mred"), "bell red");
        assert_eq!(clean("&#x1F600;"), "\u{1f600}");
        assert_eq!(html_unescape("&ampx &notit; &#0; &#x80;"), "&x ¬it; \u{fffd} \u{20ac}");
        // ftfy stops unescaping at the first line with a `<` (html.unescape, twice, still runs).
        assert_eq!(clean("&amp;amp;amp; &EACUTE;\n<\n&amp;amp;amp; &EACUTE;"), "& \u{e9} < &amp; &eacute;");
        // Arabic-Indic and full-width digits in terminal escapes; superscript two is no decimal.
        assert_eq!(clean("\x1b[\u{661}\u{662}mred \x1b[\u{ff11};1mbold"), "red bold");
        assert_eq!(clean("\x1b[\u{b2}mx"), "[\u{b2}mx");
        // A trailing U+0085 is a C1 control, Windows-1252's ellipsis.
        assert_eq!(clean("a cat\u{85}"), "a cat\u{2026}");
    }

    /// The only character that case-insensitive matching moves between the pattern's classes is
    /// U+0345 (Python's `regex` agrees: an exhaustive comparison over every code point finds it
    /// alone); the pattern must treat it as Python does: no letter, not "other" either.
    #[test]
    fn pattern_classes_are_pythons() {
        let class = |re: &str| (Regex::new(&format!("^{re}$")).unwrap(), Regex::new(&format!("^(?i:{re})$")).unwrap());
        let classes = [class(r"[\p{L}]"), class(r"[\p{N}]"), class(r"[^\s\p{L}\p{N}]")];
        let moved: Vec<u32> = (0..=0x10ffffu32)
            .filter_map(char::from_u32)
            .filter(|c| {
                let s = c.to_string();
                classes.iter().any(|(plain, folded)| plain.is_match(&s) != folded.is_match(&s))
            })
            .map(|c| c as u32)
            .collect();
        assert_eq!(moved, vec![0x345], "{moved:x?}");
        let pat = Regex::new(PATTERN).unwrap();
        let pieces = |t: &str| pat.find_iter(t).map(|m| m.as_str().to_string()).collect::<Vec<_>>();
        assert_eq!(pieces("a\u{345}b !\u{345}?"), ["a", "b", "!", "?"]);
        assert_eq!(pieces("it'\u{17f} <start_of_text>x"), ["it", "'\u{17f}", "<start_of_text>", "x"]);
    }

    #[test]
    fn byte_map_is_a_bijection() {
        let m = bytes_to_unicode();
        let set: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(m[b'a' as usize], 'a');
        assert_eq!(m[b' ' as usize], '\u{120}');
    }
}

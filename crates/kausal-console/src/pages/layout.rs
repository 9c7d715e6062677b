//! The frame of every page: the head (title, the one stylesheet, the
//! script where a page acts), the navigation and the search box.

use maud::{DOCTYPE, Markup, html};

/// Where a page sits in the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Search,
    DeadLetters,
    Lag,
    Services,
    Topics,
    /// A page of its own (a correlation, an error).
    None,
}

/// The navigation: label, path, section.
const NAV: [(&str, &str, Section); 5] = [
    ("Search", "/", Section::Search),
    ("Dead letters", "/dlq", Section::DeadLetters),
    ("Lag", "/lag", Section::Lag),
    ("Services", "/services", Section::Services),
    ("Topics", "/topics", Section::Topics),
];

/// A whole document around `main`. `script`: the page has buttons that
/// call the API (the console's script is loaded, deferred).
pub fn page(title: &str, current: Section, script: bool, main: Markup) -> Markup {
    document(title, current, script, None, main)
}

/// [`page`] refreshed live every `seconds` (`assets/refresh.js`, so the
/// script is loaded): its `[data-live][id]` elements are replaced by their
/// namesakes from a fresh copy of the page.
pub fn live_page(title: &str, current: Section, seconds: u32, main: Markup) -> Markup {
    document(title, current, true, Some(seconds), main)
}

fn document(
    title: &str,
    current: Section,
    script: bool,
    refresh_seconds: Option<u32>,
    main: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Kausal console" }
                // No favicon request (and so no 404 in the browser's console).
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(super::css_href());
                @if script {
                    script src=(super::js_href()) defer {}
                }
            }
            body {
                header.top {
                    a.brand href="/" { "Kausal" }
                    nav aria-label="Console" {
                        ul {
                            @for (label, href, section) in NAV {
                                li {
                                    a href=(href) aria-current=[(section == current).then_some("page")] {
                                        (label)
                                    }
                                }
                            }
                        }
                    }
                    @if current != Section::Search {
                        form.quick action="/search" method="get" role="search" {
                            label.visually-hidden for="quick-q" { "Find an id" }
                            input #quick-q type="search" name="q" maxlength="256" required
                                placeholder="order, correlation, event, trace or dead-letter id";
                        }
                    }
                }
                main data-refresh-seconds=[refresh_seconds] { (main) }
            }
        }
    }
}

/// The form where the user pastes the console's token once per tab, for
/// every button that changes something (`assets/token.js`).
pub fn token_form() -> Markup {
    html! {
        form #token-form.token {
            label for="token" { "Console token" }
            input #token type="password" autocomplete="off" spellcheck="false"
                placeholder="the token kausal up printed";
            button type="submit" { "Use for this tab" }
            button #token-forget type="button" hidden { "Forget" }
            output #token-state aria-live="polite" {}
            p.hint {
                "Replay and discard need the console's token (printed by " code { "kausal up" }
                "; also in " code { "<data-dir>/console-token" } "). It is kept in this tab's "
                "session storage and sent as " code { "Authorization: Bearer" } ", nowhere else."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_current_section_is_marked_and_the_title_escaped() {
        let html = page("<t>", Section::Search, false, html! { p { "x" } }).into_string();
        assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
        assert!(
            html.contains("<title>&lt;t&gt; · Kausal console</title>"),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/" aria-current="page">Search</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/dlq">Dead letters</a>"#),
            "{html}"
        );
        assert!(!html.contains("<script"), "no script unless asked: {html}");
        assert!(!html.contains("quick-q"), "the search page has its own box");
        let html = page("t", Section::None, true, html! {}).into_string();
        assert!(
            html.contains(r#"<script src="/assets/console.js?v="#),
            "{html}"
        );
        assert!(html.contains("quick-q"), "{html}");
    }
}

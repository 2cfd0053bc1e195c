// All strings the page shows come from a locale file; English is the fallback for a missing key.
import en from "../locales/en.json";
import de from "../locales/de.json";

export type Key = keyof typeof en;
export const locales: Record<string, Record<string, string>> = { en, de };

let current: Record<string, string> = en;

/** Picks the locale for a BCP 47 tag (`de-AT` → German), English otherwise. */
export function setLocale(tag: string): string {
  const language = tag.toLowerCase().split("-")[0] ?? "en";
  current = locales[language] ?? en;
  return locales[language] ? language : "en";
}

/** The string for `key`, with `{name}` placeholders filled. */
export function t(key: Key | string, params: Record<string, string | number> = {}): string {
  const template = current[key] ?? (en as Record<string, string>)[key] ?? key;
  return template.replace(/\{(\w+)\}/g, (whole, name: string) =>
    name in params ? String(params[name]) : whole,
  );
}

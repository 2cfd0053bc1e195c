import { describe, expect, it } from "vitest";
import { locales, setLocale, t } from "./i18n";

describe("locales", () => {
  it("have the same keys in every language, none empty", () => {
    const english = Object.keys(locales.en ?? {}).sort();
    for (const [name, strings] of Object.entries(locales)) {
      expect(Object.keys(strings).sort(), name).toEqual(english);
      expect(Object.values(strings).filter((s) => s.trim() === ""), name).toEqual([]);
    }
  });

  it("fill placeholders and follow the system language", () => {
    expect(setLocale("de-AT")).toBe("de");
    expect(t("call.connecting_to", { name: "Alice" })).toBe("Verbinde mit Alice…");
    expect(setLocale("fr-FR")).toBe("en");
    expect(t("call.connecting_to", { name: "Alice" })).toBe("Connecting to Alice…");
  });

  it("have a message for every error code the shell can send", async () => {
    const bindings = await import("./bindings?raw");
    const union = /export type ErrorCode = ([^;]+);/.exec(bindings.default)?.[1] ?? "";
    const codes = [...union.matchAll(/"(\w+)"/g)].map((m) => m[1]);
    expect(codes.length).toBeGreaterThan(5);
    for (const code of codes) expect(locales.en?.[`error.${code}`], code).toBeTruthy();
  });
});

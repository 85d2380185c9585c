"""suppress/core.py: the answers kept valid by the display host's watch (root-window
properties, RANDR and XKB queries), the version-dependent extension answers, and the requests
that are no barrier to known answers. The display host's side is export/watch.py."""

from __future__ import annotations

import struct

from xproxy.suppress.core import MAX_WATCHED_REPLY, DisplayCache, Kind, parse_roots

from .test_suppress import (
    ROOT,
    Harness,
    error,
    event,
    ext_reply,
    ext_request,
    intern,
    intern_reply,
    query_extension,
    query_extension_reply,
    setup_reply,
    warm_atoms,
)

RESOURCE_MANAGER = 23
RANDR, RANDR_EVENT = 140, 89
XKB, XKB_EVENT = 135, 85
XI = 131


def get_property(atom: int = RESOURCE_MANAGER, window: int = ROOT, delete: int = 0,
                 type_: int = 0, offset: int = 0, length: int = 100_000_000) -> bytes:
    return struct.pack("<BBHIIIII", 20, delete, 6, window, atom, type_, offset, length)


def property_reply(seq: int, value: bytes) -> bytes:
    padded = value + b"\0" * (-len(value) % 4)
    return struct.pack("<BBHIIII12x", 1, 8, seq & 0xFFFF, len(padded) // 4, 31, 0,
                       len(value)) + padded


def property_notify(seq: int, window: int = ROOT, atom: int = RESOURCE_MANAGER) -> bytes:
    return struct.pack("<BxHIIIB15x", 28, seq & 0xFFFF, window, atom, 0, 0)


def watching(cache: DisplayCache | None = None) -> Harness:
    h = Harness(cache)
    h.cache.watch(["props", "randr", "xkb", "xi", "sel:400"])
    return h


def learn_property(h: Harness, value: bytes, **kw: int) -> int:
    h.send(get_property(**kw))
    seq = h.s.seq
    h.server(property_reply(seq, value))
    h.take()
    return seq


def asks(h: Harness, request: bytes) -> bool:
    """Whether the request, sent now, is answered at once (True) or waits for the server."""
    h.take()
    h.send(request)
    return h.to_client != b""


def test_parse_roots() -> None:
    assert parse_roots(setup_reply(), "<") == {ROOT}


def test_a_root_property_is_learnt_then_answered_while_the_display_host_watches() -> None:
    h = watching()
    learn_property(h, b"Xft.dpi: 96\n")
    h2 = Harness(h.cache)  # another connection
    h2.send(get_property())
    assert h2.to_client == property_reply(h2.s.seq, b"Xft.dpi: 96\n")
    assert h2.to_server.endswith(get_property())  # still sent: its reply is compared
    h2.take()
    h2.server(property_reply(h2.s.seq, b"Xft.dpi: 96\n"))
    assert h2.to_client == b"" and h2.cache.stats.mismatches == 0


def test_offsets_lengths_types_and_windows_are_part_of_the_question() -> None:
    h = watching()
    learn_property(h, b"Xft.dpi: 96\n")
    assert not asks(h, get_property(offset=1))
    assert not asks(h, get_property(length=1))
    assert not asks(h, get_property(type_=31))
    assert not asks(h, get_property(window=0x200001))  # not a root window: never answered
    h.server(property_reply(h.s.seq, b"x"))
    assert not asks(h, get_property(window=0x200001))
    h.server(property_reply(h.s.seq, b"x"))
    assert asks(h, get_property())


def test_nothing_is_answered_when_the_display_host_does_not_watch() -> None:
    h = Harness()
    learn_property(h, b"Xft.dpi: 96\n")
    assert not h.cache.watched
    h = watching()
    learn_property(h, b"Xft.dpi: 96\n")
    h.cache.watch(None)  # the link went: its reports may be lost
    assert not h.cache.watched and not asks(h, get_property())


def test_a_change_reported_by_the_display_host_forgets_that_property_only() -> None:
    h = watching()
    learn_property(h, b"Xft.dpi: 96\n")
    learn_property(h, b"other", atom=300)
    h.cache.display_changed(props=frozenset({RESOURCE_MANAGER}))
    assert not asks(h, get_property())
    h.server(property_reply(h.s.seq, b"new"))
    assert asks(h, get_property(atom=300))


def test_a_reply_read_across_a_change_is_not_learnt() -> None:
    h = watching()
    h.send(get_property())
    h.cache.display_changed(props=frozenset({RESOURCE_MANAGER}))  # the reply may predate it
    h.server(property_reply(h.s.seq, b"old"))
    assert not h.cache.watched


def test_the_clients_own_changes_of_root_properties_forget_them() -> None:
    h = watching()
    learn_property(h, b"Xft.dpi: 96\n")
    change = struct.pack("<BBHIIIB3xI", 18, 0, 7, ROOT, RESOURCE_MANAGER, 31, 8, 4) + b"abcd"
    h.send(change)
    assert not h.cache.watched
    learn_property(h, b"abcd")
    h.send(struct.pack("<BxHII", 19, 3, ROOT, RESOURCE_MANAGER))  # DeleteProperty
    assert not h.cache.watched
    learn_property(h, b"abcd")
    h.send(change[:7], change[7:])  # the header in two pieces
    assert not h.cache.watched
    learn_property(h, b"abcd")
    assert not asks(h, get_property(delete=1))  # may delete it: never answered
    assert not h.cache.watched


def test_a_property_notify_for_a_root_window_forgets_before_the_client_hears_of_it() -> None:
    h = watching()
    learn_property(h, b"Xft.dpi: 96\n")
    h.server(property_notify(h.s.seq, window=0x200001))  # not a root window
    assert h.take() == [(28, h.s.seq)] and h.cache.watched
    h.server(property_notify(h.s.seq))
    assert h.take() == [(28, h.s.seq)] and not h.cache.watched


def test_a_kept_reply_is_bounded() -> None:
    h = watching()
    learn_property(h, b"x" * (MAX_WATCHED_REPLY + 1))
    assert not h.cache.watched


def randr(h: Harness) -> None:
    h.send(query_extension(b"RANDR"))
    h.server(query_extension_reply(h.s.seq, RANDR)[:10] + bytes([RANDR_EVENT])
             + query_extension_reply(h.s.seq, RANDR)[11:])
    h.take()


def resources(window: int = ROOT) -> bytes:
    return ext_request(RANDR, 25, struct.pack("<I", window))  # GetScreenResourcesCurrent


def learn(h: Harness, request: bytes, payload: bytes = b"res") -> None:
    h.send(request)
    h.server(ext_reply(h.s.seq, payload))
    h.take()


def test_randr_screen_resources_answered_until_a_randr_event() -> None:
    h = watching()
    randr(h)
    learn(h, resources())
    h2 = Harness(h.cache)
    randr(h2)
    assert asks(h2, resources())
    h2.server(ext_reply(h2.s.seq, b"res"))
    assert h2.cache.stats.mismatches == 0
    h2.server(event(h2.s.seq, RANDR_EVENT + 1))  # RRNotify, to a client that selected it
    assert not asks(h2, resources())


def test_randr_resources_of_a_window_not_root_are_never_answered() -> None:
    h = watching()
    randr(h)
    learn(h, resources(0x200001))
    assert not asks(h, resources(0x200001))


def test_a_randr_request_that_changes_the_screen_forgets_the_randr_answers() -> None:
    h = watching()
    randr(h)
    learn(h, resources())
    h.send(ext_request(RANDR, 21, bytes(24)))  # SetCrtcConfig
    assert not h.cache.watched
    learn(h, resources())
    h.send(ext_request(RANDR, 4, struct.pack("<IHH", ROOT, 1, 0)))  # SelectInput: changes nothing
    assert h.cache.watched
    h.cache.display_changed(groups=frozenset({"randr"}))
    assert not h.cache.watched


def test_randr_get_output_property_that_deletes_is_not_answered() -> None:
    h = watching()
    randr(h)
    keep = ext_request(RANDR, 15, struct.pack("<IIIIIBB2x", 1, 2, 0, 0, 100, 0, 0))
    learn(h, keep)
    assert asks(h, keep)
    h.server(ext_reply(h.s.seq, b"res"))
    assert not asks(h, ext_request(RANDR, 15, struct.pack("<IIIIIBB2x", 1, 2, 0, 0, 100, 1, 0)))
    assert not h.cache.watched


def xkb(h: Harness, use: bool = True) -> None:
    h.send(query_extension(b"XKEYBOARD"))
    h.server(query_extension_reply(h.s.seq, XKB)[:10] + bytes([XKB_EVENT])
             + query_extension_reply(h.s.seq, XKB)[11:])
    if use:
        h.send(ext_request(XKB, 0, struct.pack("<HH", 1, 0)))  # UseExtension
        h.server(ext_reply(h.s.seq, b"\1"))
    h.take()


GET_MAP = ext_request(XKB, 8, struct.pack("<HHH", 0x100, 0xFF, 0) + bytes(18))


def test_xkb_get_map_answered_after_use_extension_until_an_xkb_event() -> None:
    h = watching()
    xkb(h)
    learn(h, GET_MAP, b"keymap")
    h2 = Harness(h.cache)
    xkb(h2, use=False)  # without UseExtension the server says BadAccess: another question
    assert not asks(h2, GET_MAP)
    h3 = Harness(h.cache)
    xkb(h3)
    assert asks(h3, GET_MAP)
    h3.server(ext_reply(h3.s.seq, b"keymap"), event(h3.s.seq, XKB_EVENT))
    assert h3.cache.stats.mismatches == 0 and not h3.cache.watched


def test_a_core_keyboard_change_forgets_the_xkb_answers() -> None:
    h = watching()
    xkb(h)
    learn(h, GET_MAP, b"keymap")
    h.send(struct.pack("<BBHBB2x", 100, 1, 3, 8, 1) + b"\0\0\0\0")  # ChangeKeyboardMapping
    assert not h.cache.watched


def xi_version(minor: int, major: int, version: int) -> bytes:
    return ext_request(XI, minor, struct.pack("<HH", major, version))


def test_xi_query_version_depends_on_the_versions_asked_before() -> None:
    h = Harness()
    h.send(query_extension(b"XInputExtension"))
    h.server(query_extension_reply(h.s.seq, XI))
    h.send(xi_version(47, 2, 3))
    h.server(ext_reply(h.s.seq, struct.pack("<HH", 2, 3)))
    h.send(xi_version(47, 2, 4))
    h.server(ext_reply(h.s.seq, struct.pack("<HH", 2, 3)))
    h.take()
    h2 = Harness(h.cache)
    h2.send(query_extension(b"XInputExtension"))
    assert not asks(h2, xi_version(47, 2, 4))  # first on this connection: another question
    h3 = Harness(h.cache)
    h3.send(query_extension(b"XInputExtension"))
    assert asks(h3, xi_version(47, 2, 3))
    assert asks(h3, xi_version(47, 2, 4))


def test_grab_and_ungrab_server_are_no_barrier() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    assert asks(h, struct.pack("<BxH", 36, 1) + intern(b"A"))  # GrabServer
    assert asks(h, struct.pack("<BxH", 37, 1) + intern(b"A"))  # UngrabServer


def change_attributes(window: int, events: int, mask: int = 0x800) -> bytes:
    return struct.pack("<BxHIII", 2, 4, window, mask, events)


def test_selecting_events_on_a_root_window_is_no_barrier_unless_it_could_fail() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    assert asks(h, change_attributes(ROOT, 0x420000) + intern(b"A"))  # Property, Structure
    assert not asks(h, change_attributes(ROOT, 0x100000) + intern(b"A"))  # SubstructureRedirect
    h.server(error(h.s.seq - 1, 10))
    assert not asks(h, change_attributes(0x200001, 0x400000) + intern(b"A"))  # not a root
    h.server(error(h.s.seq - 1, 3))
    assert not asks(h, change_attributes(ROOT, 0x400000, 0x801) + intern(b"A"))  # background too
    h.server(error(h.s.seq - 1, 3))
    assert not asks(h, change_attributes(ROOT, 0x2000000) + intern(b"A"))  # no such event
    h.server(error(h.s.seq - 1, 2))


def test_kinds_are_named_for_the_mismatch_log() -> None:
    assert Kind.ROOT_PROPERTY.value == "rprop" and Kind.WATCHED.value == "wreq"


GLX = 152


def glx_session(h: Harness, client_info: bytes) -> None:
    h.send(query_extension(b"GLX"))
    if h.to_client == b"":
        h.server(query_extension_reply(h.s.seq, GLX))
    h.take()
    h.send(ext_request(GLX, 20, struct.pack("<III", 1, 4, len(client_info)) + client_info))
    h.send(intern(b"SYNC"))  # a round trip: the server has done ClientInfo
    h.server(intern_reply(h.s.seq, 400))
    h.take()


def server_string() -> bytes:
    return ext_request(GLX, 19, struct.pack("<II", 0, 3))  # QueryServerString(0, EXTENSIONS)


def test_glx_server_strings_answered_for_the_same_client_info() -> None:
    h = Harness()
    glx_session(h, b"GL_ARB_one\0\0")
    h.send(server_string())
    h.server(ext_reply(h.s.seq, b"GLX_EXT_x"))
    h.take()
    h2 = Harness(h.cache)
    glx_session(h2, b"GL_ARB_one\0\0")
    assert asks(h2, server_string())
    h3 = Harness(h.cache)
    glx_session(h3, b"GL_ARB_two\0\0")  # another client's info: another question
    assert not asks(h3, server_string())


def test_a_glx_client_info_too_long_to_read_passes_and_matches_no_other_connection() -> None:
    h = Harness()
    glx_session(h, b"GL_ARB_one\0\0")
    h.send(server_string())
    h.server(ext_reply(h.s.seq, b"GLX_EXT_x"))
    h2 = Harness(h.cache)
    long_info = b"GL_ARB_one\0\0" * 13000  # over MAX_HELD_REQUEST: not read whole
    glx_session(h2, long_info)
    assert h2.to_server.endswith(intern(b"SYNC"))
    assert not asks(h2, server_string())


def xi_get_property(delete: int = 0) -> bytes:
    return ext_request(XI, 59, struct.pack("<HBxIIII", 6, delete, 114, 0, 0, 100))


def xi_session(h: Harness) -> None:
    h.send(query_extension(b"XInputExtension"))
    if h.to_client == b"":
        h.server(query_extension_reply(h.s.seq, XI))
    h.take()


def test_xi_device_properties_answered_until_a_hierarchy_or_property_event() -> None:
    h = watching()
    xi_session(h)
    learn(h, xi_get_property(), b"matrix")
    h2 = Harness(h.cache)
    xi_session(h2)
    assert asks(h2, xi_get_property())
    h2.server(ext_reply(h2.s.seq, b"matrix"))
    motion = struct.pack("<BBHIH", 35, XI, h2.s.seq, 0, 6).ljust(32, b"\0")
    h2.server(motion)  # a pointer motion changes no property
    assert h2.cache.watched
    h2.server(struct.pack("<BBHIH", 35, XI, h2.s.seq, 0, 12).ljust(32, b"\0"))  # PropertyEvent
    assert not h2.cache.watched and h2.cache.stats.mismatches == 0


def test_an_xi_property_read_that_deletes_is_not_answered_and_forgets() -> None:
    h = watching()
    xi_session(h)
    learn(h, xi_get_property(), b"matrix")
    assert not asks(h, xi_get_property(delete=1))
    assert not h.cache.watched


def get_selection_owner(atom: int = 400) -> bytes:
    return struct.pack("<BxHI", 23, 2, atom)


def owner_reply(seq: int, owner: int) -> bytes:
    return struct.pack("<BxHII20x", 1, seq & 0xFFFF, 0, owner)


def test_the_owner_of_a_watched_selection_is_answered_until_it_changes() -> None:
    h = watching()
    h.send(get_selection_owner())
    h.server(owner_reply(h.s.seq, 0x400001))
    h.take()
    assert asks(h, get_selection_owner())
    h.server(owner_reply(h.s.seq, 0x400001))
    assert h.cache.stats.mismatches == 0
    h.cache.display_changed(groups=frozenset({"sel:400"}))
    assert not asks(h, get_selection_owner())


def test_an_unwatched_selection_is_never_answered() -> None:
    h = watching()
    h.send(get_selection_owner(401))
    h.server(owner_reply(h.s.seq, 0x400001))
    assert not asks(h, get_selection_owner(401))


def test_setting_a_selection_owner_or_hearing_of_a_change_forgets_it() -> None:
    h = watching()
    for forget in (struct.pack("<BxHIII", 22, 4, 0x200001, 400, 0),  # SetSelectionOwner
                   None):
        h.send(get_selection_owner())
        h.server(owner_reply(h.s.seq, 0x400001))
        h.take()
        assert h.cache.watched
        if forget is not None:
            h.send(forget)
        else:  # SelectionClear: this client lost it
            h.server(struct.pack("<BxHIII16x", 29, h.s.seq, 0, 0x200001, 400))
        assert not h.cache.watched


def per_client_flags(value: int) -> bytes:
    return ext_request(XKB, 21, struct.pack("<HxxIIIII", 0x100, 1, value, 0, 0, 0))


def test_xkb_per_client_flags_answered_for_the_same_flags_asked_before() -> None:
    h = Harness()
    xkb(h)
    h.send(per_client_flags(1))
    h.server(ext_reply(h.s.seq, b"\1"))
    h.take()
    h2 = Harness(h.cache)
    xkb(h2)
    assert asks(h2, per_client_flags(1))
    h2.server(ext_reply(h2.s.seq, b"\1"))
    h3 = Harness(h.cache)
    xkb(h3)
    h3.send(per_client_flags(0))  # another history: the flags left set may differ
    h3.server(ext_reply(h3.s.seq, b"\0"))
    assert not asks(h3, per_client_flags(1))


XFIXES = 138


def select_selection_input(window: int = ROOT, atom: int = 300, events: int = 7) -> bytes:
    return ext_request(XFIXES, 2, struct.pack("<III", window, atom, events))


def test_selecting_selection_events_on_a_root_window_is_no_barrier_unless_it_could_fail() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    h.send(query_extension(b"XFIXES"))
    h.server(query_extension_reply(h.s.seq, XFIXES))
    assert not asks(h, select_selection_input() + intern(b"A"))  # no QueryVersion: BadRequest
    h.server(error(h.s.seq - 1, 1))
    h.send(ext_request(XFIXES, 0, struct.pack("<II", 5, 0)))
    h.server(ext_reply(h.s.seq, struct.pack("<II", 5, 0)))
    assert asks(h, select_selection_input() + intern(b"A"))
    assert not asks(h, select_selection_input(atom=301) + intern(b"A"))  # an unknown atom
    h.server(error(h.s.seq - 1, 5))
    assert not asks(h, select_selection_input(window=0x200001) + intern(b"A"))
    h.server(error(h.s.seq - 1, 3))
    assert not asks(h, select_selection_input(events=8) + intern(b"A"))
    h.server(error(h.s.seq - 1, 2))
    assert not asks(h, select_selection_input()[:9])  # the header in two pieces
    assert asks(h, select_selection_input()[9:] + intern(b"A"))


def create_gc(gc: int = 0x200001, drawable: int = ROOT, mask: int = 0xC,
              values: tuple[int, ...] = (0, 0xFFFFFF)) -> bytes:
    return struct.pack(f"<BxHIII{len(values)}I", 55, 4 + len(values), gc, drawable, mask, *values)


def test_xlibs_default_gc_is_no_barrier_unless_it_could_fail() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    assert asks(h, create_gc() + intern(b"A"))  # foreground and background on the root
    assert asks(h, create_gc(0x200002, mask=0x4, values=(7,)) + intern(b"A"))
    for could_fail, code in ((create_gc(0x100001), 14),  # not this client's id: BadIDChoice
                             (create_gc(drawable=0x200009), 9),  # a drawable that may be gone
                             (create_gc(mask=0x10000, values=(1,)), 2)):  # GraphicsExposures
        assert not asks(h, could_fail + intern(b"A"))
        h.server(error(h.s.seq - 1, code))


def none_error(seq: int, major: int, code: int) -> bytes:
    return struct.pack("<BBHIHB21x", 0, code, seq & 0xFFFF, 0, 0, major)


def test_a_request_naming_none_is_answered_with_its_error_once_learnt() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    geometry = struct.pack("<BxHI", 14, 2, 0)  # GetGeometry(None): BadDrawable, always
    assert not asks(h, geometry)
    h.server(none_error(h.s.seq, 14, 9))
    assert h.take() == [(0, h.s.seq)]
    h2 = Harness(h.cache)
    h2.send(geometry[:1] + b"\1" + geometry[2:] + intern(b"A"))  # the unused byte set
    # the error, then the atom: in order, at once
    assert h2.take() == [(0, h2.s.seq - 1), (1, h2.s.seq)]
    assert h2.to_server.endswith(intern(b"A"))  # still sent: compared
    h2.server(none_error(h2.s.seq - 1, 14, 9), intern_reply(h2.s.seq, 300))
    assert h2.to_client == b"" and h2.cache.stats.mismatches == 0
    h2.server()
    # another window, or another request, is another question; a real window may be gone
    assert not asks(h2, struct.pack("<BxHI", 3, 2, 0))  # GetWindowAttributes(None)
    h2.server(none_error(h2.s.seq, 3, 3))
    assert not asks(h2, struct.pack("<BxHI", 14, 2, ROOT) + intern(b"A"))
    h2.server(ext_reply(h2.s.seq - 1), intern_reply(h2.s.seq, 300))
    assert not asks(h2, struct.pack("<BxHI", 14, 2, 0x200001))
    assert DisplayCache.from_json(h.cache.to_json()).replies == h.cache.replies


def rr_select_input(window: int = ROOT, enable: int = 0xB) -> bytes:
    return ext_request(RANDR, 4, struct.pack("<IH2x", window, enable))


def test_randr_select_input_on_a_root_is_no_barrier_while_the_configuration_is_unchanged(
        ) -> None:
    cache = DisplayCache("epoch")
    cache.watch(["props", "randr"])
    h = Harness(cache)
    warm_atoms(h, {b"A": 300})
    randr(h)
    assert asks(h, rr_select_input() + intern(b"A"))
    assert asks(h, rr_select_input(enable=0) + intern(b"A"))  # unselects: no event, no error
    for could_fail, code in ((rr_select_input(0x200001), 3),  # a window that may be gone
                             (rr_select_input(enable=0x80), 2)):  # no known bit: BadValue
        assert not asks(h, could_fail + intern(b"A"))
        h.server(error(h.s.seq - 1, code))
    h.take()
    # the configuration changed since this connection's setup: the server sends it events
    h.cache.display_changed(groups=frozenset({"randr"}))
    assert not asks(h, rr_select_input() + intern(b"A"))
    h.server(intern_reply(h.s.seq, 300))
    h2 = Harness(h.cache)  # a connection made since: the server has told it nothing either
    warm_atoms(h2, {b"A": 300})
    randr(h2)
    assert asks(h2, rr_select_input() + intern(b"A"))
    h2.take()
    h2.cache.watch(None)  # no longer watched: a change would not be heard of
    h2.cache.watch(["props", "randr"])
    assert not asks(h2, rr_select_input() + intern(b"A"))


def send_event(destination: int = ROOT, events: int = 0x180000, kind: int = 33,
               detail: int = 32, propagate: int = 0) -> bytes:
    return struct.pack("<BBHII", 25, propagate, 11, destination, events) \
        + struct.pack("<BB", kind, detail).ljust(32, b"\0")


def test_send_event_to_a_root_no_event_of_which_comes_back_is_no_barrier() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    assert asks(h, send_event() + intern(b"A"))  # as a window asks the WM for a state
    assert asks(h, send_event(propagate=1) + intern(b"A"))
    for could_fail in (send_event(0x200001),  # a window that may be gone
                       send_event(1),  # InputFocus
                       send_event(kind=35),  # GenericEvent: BadValue
                       send_event(detail=7),  # a ClientMessage format: BadValue
                       send_event(events=0x2000000),  # no such event bit
                       send_event(events=0),  # to the root's creator
                       send_event(propagate=2)):  # BadValue
        assert not asks(h, could_fail + intern(b"A"))
        h.server(error(h.s.seq - 1, 2))
    # once this client selects SubstructureNotify on the root, the event comes back to it
    assert asks(h, change_attributes(ROOT, 0x80000) + intern(b"A"))
    assert not asks(h, send_event() + intern(b"A"))
    h.server(event(h.s.seq - 1, 33 | 0x80), intern_reply(h.s.seq, 300))
    assert asks(h, send_event(events=0x100000) + intern(b"A"))  # Redirect: not selected
    h.send(struct.pack("<BxHII", 2, 4, ROOT, 0x801) + struct.pack("<I", 0))  # background too
    assert not asks(h, send_event(events=0x100000) + intern(b"A"))  # all bits assumed


MONITORS = ext_request(RANDR, 42, struct.pack("<IB3x", ROOT, 1))  # GetMonitors, active


def configure_notify(seq: int, window: int = ROOT) -> bytes:
    return struct.pack("<BxHII", 22, seq & 0xFFFF, window, window).ljust(32, b"\0")


def test_randr_monitors_answered_while_the_root_configure_notify_is_watched() -> None:
    h = watching()
    randr(h)
    learn(h, MONITORS, b"monitors")
    assert not asks(h, MONITORS)  # the watch does not vouch for SetMonitor: never answered
    h.server(ext_reply(h.s.seq, b"monitors"))
    h.cache.watch(["props", "randr", "monitors"])
    learn(h, MONITORS, b"monitors")
    assert asks(h, MONITORS)
    h.server(ext_reply(h.s.seq, b"monitors"))
    assert not asks(h, ext_request(RANDR, 42, struct.pack("<IB3x", 0x200001, 1)))
    h.server(ext_reply(h.s.seq, b"monitors"))
    h.take()
    h.server(configure_notify(h.s.seq, 0x200001))  # not a root: nothing to do with it
    assert h.take() == [(22, h.s.seq)] and asks(h, MONITORS)
    h.server(ext_reply(h.s.seq, b"monitors"))
    h.take()
    h.server(configure_notify(h.s.seq))  # the root's: xrandr --setmonitor, or a new size
    assert h.take() == [(22, h.s.seq)] and not h.cache.watched
    learn(h, MONITORS, b"two")
    h.send(ext_request(RANDR, 43, bytes(24)))  # SetMonitor by a client of the link
    assert not h.cache.watched
    assert h.cache.stats.mismatches == 0


def xkb_select(which: int = 0x7, clear: int = 0, select_all: int = 0x7,
               details: bytes = b"", device: int = 0x100) -> bytes:
    return ext_request(XKB, 1, struct.pack("<HHHHHH", device, which, clear, select_all, 0, 0)
                       + details)


def use_xkb(h: Harness, supported: int = 1, major: int = 1) -> None:
    h.take()
    h.send(ext_request(XKB, 0, struct.pack("<HH", major, 0)))  # UseExtension
    if h.to_client == b"":
        h.server(struct.pack("<BBHIHH20x", 1, supported, h.s.seq & 0xFFFF, 0, 1, 0))
    h.take()


def test_xkb_select_events_that_cannot_fail_are_no_barrier() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    xkb(h, use=False)
    assert not asks(h, xkb_select() + intern(b"A"))  # before UseExtension: BadAccess
    h.server(error(h.s.seq - 1, 10))
    use_xkb(h, supported=0, major=2)
    assert not asks(h, xkb_select() + intern(b"A"))  # refused: still BadAccess
    h.server(error(h.s.seq - 1, 10))
    use_xkb(h)
    assert asks(h, xkb_select() + intern(b"A"))  # as GDK's keymap selects, then its details
    assert asks(h, xkb_select(0x4, 0, 0, struct.pack("<HH", 0x3FFF, 0x3)) + intern(b"A"))
    assert asks(h, xkb_select(0x1, 0, 0, struct.pack("<HH", 0x5, 0x5), device=3)
                + intern(b"A"))  # the core keyboard by its device id
    for could_fail in (xkb_select(device=0x200),  # another device: may not exist
                       xkb_select(device=4),
                       xkb_select(0x8, 0, 0x8),  # controls: not read here
                       xkb_select(0x4, 0, 0),  # details missing: BadLength
                       xkb_select(0x4, 0, 0, struct.pack("<HH", 0x3, 0x4)),  # BadMatch
                       xkb_select(0x4, 0, 0, struct.pack("<HH", 0x4000, 0)),  # BadValue
                       xkb_select(0x7, 0, 0x7, bytes(4))):  # bytes over: BadLength
        assert not asks(h, could_fail + intern(b"A"))
        h.server(error(h.s.seq - 1, 2))
    h2 = Harness(h.cache)
    xkb(h2, use=False)
    use_xkb(h2)
    h3 = Harness(h.cache)  # UseExtension answered by the link: the same
    warm_atoms(h3, {b"A": 300})
    xkb(h3, use=False)
    assert asks(h3, ext_request(XKB, 0, struct.pack("<HH", 1, 0)))
    assert asks(h3, xkb_select() + intern(b"A"))


def create_pixmap(pid: int = 0x200005, drawable: int = ROOT, depth: int = 24,
                  width: int = 24, height: int = 24) -> bytes:
    return struct.pack("<BBHIIHH", 53, depth, 4, pid, drawable, width, height)


def test_a_pixmap_on_a_root_of_one_of_its_depths_is_no_barrier() -> None:
    h = Harness()
    warm_atoms(h, {b"A": 300})
    assert asks(h, create_pixmap() + intern(b"A"))  # as GTK makes its cursors' images
    assert asks(h, create_pixmap(0x200006, depth=1, width=4096) + intern(b"A"))
    for could_fail, code in ((create_pixmap(depth=32), 2),  # not a depth of this screen
                             (create_pixmap(width=0), 2),
                             (create_pixmap(height=32768), 11),  # BadAlloc
                             (create_pixmap(height=4097), 11),  # may not find the memory
                             (create_pixmap(0x100001), 14),  # not this client's id
                             (create_pixmap(drawable=0x200009), 9)):  # may be gone
        assert not asks(h, could_fail + intern(b"A"))
        h.server(error(h.s.seq - 1, code))


def get_state(device: int = 0x100) -> bytes:
    return ext_request(XKB, 4, struct.pack("<H2x", device))


def test_xkb_state_answered_while_the_watch_hears_of_no_state_change() -> None:
    h = watching()  # vouches for "xkb" only: an older display host
    xkb(h)
    learn(h, get_state(), b"state")
    assert not asks(h, get_state())
    h.server(ext_reply(h.s.seq, b"state"))
    h.cache.watch(["props", "xkb", "xkbstate"])
    learn(h, get_state(), b"state")
    learn(h, GET_MAP, b"keymap")
    assert asks(h, get_state())
    h.server(ext_reply(h.s.seq, b"state"))
    assert not asks(h, get_state(0x200))  # another device: its state is not watched
    h.server(ext_reply(h.s.seq, b"other"))
    learn(h, get_state(3), b"state")  # the core keyboard by its device id (Qt asks so)
    assert asks(h, get_state(3))
    h.server(ext_reply(h.s.seq, b"state"))
    h.take()
    h.cache.display_changed(groups=frozenset({"xkbstate"}))  # a modifier pressed
    assert not asks(h, get_state())  # the state is read anew; the keymap is still known
    h.server(ext_reply(h.s.seq, b"shift"))
    assert asks(h, GET_MAP) and asks(h, get_state())
    h.server(ext_reply(h.s.seq - 1, b"keymap"), ext_reply(h.s.seq, b"shift"))
    h.take()
    h.server(event(h.s.seq, XKB_EVENT))  # an XKB event the client selected: both forgotten
    assert not h.cache.watched
    assert h.cache.stats.mismatches == 0

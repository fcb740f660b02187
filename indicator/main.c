/*
 * main.c - tf-indicator: the GTK side. One tray icon (libayatana-
 * appindicator3) whose picture is the worst state of every master watched,
 * a menu per master listing its failing builders, and a desktop
 * notification (libnotify) when a builder turns red or green again.
 *
 * Everything this file decides comes from state.c (levels, notes, menu
 * items, title) and everything it hears comes from net.c (messages through
 * an eventfd watched by the GTK loop); this file only turns them into
 * widgets, notifications and the optional --dump-state file. The menu is
 * rebuilt only when its items change, so an open menu is not torn down by
 * every build event.
 *
 * The tray: AppIndicator speaks StatusNotifierItem over D-Bus where a host
 * runs (GNOME with the AppIndicator extension, KDE, Xfce, ...). Where none
 * answers, libayatana-appindicator3 falls back by itself to a
 * GtkStatusIcon (XEmbed, shown by trayer, stalonetray, older panels): with
 * no session bus at all (it warns and falls back at once) and with a bus
 * but no StatusNotifierWatcher (its "connection-changed" says so). So this
 * file does not make a GtkStatusIcon of its own: it would be a second icon
 * whenever the fallback is taken. The dump records which way the icon went
 * ("status_notifier").
 *
 * The icons are PNGs drawn for the project (icons/make_icons.py), found
 * through app_indicator_set_icon_theme_path, so the colours do not depend
 * on the desktop's icon theme.
 */
#include <errno.h>
#include <gio/gio.h>
#include <glib-unix.h>
#include <gtk/gtk.h>
#include <jansson.h>
#include <libayatana-appindicator/app-indicator.h>
#include <libnotify/notify.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "net.h"
#include "state.h"
#include "tf_err.h"
#include "util.h"

#ifndef TF_IND_ICON_DIR
#define TF_IND_ICON_DIR "/usr/local/share/testfarm/icons"
#endif

#define MENU_MAX 512        /* menu items in all */
#define NOTES_KEPT 100      /* notifications remembered for the dump */
#define OPENED_KEPT 20      /* opened URLs remembered for the dump */

typedef struct sent_note {
    tf_ind_note_t note;
    bool shown;
    char error[200];
} sent_note_t;

typedef struct app {
    tf_ind_conf_t conf;
    tf_ind_master_t masters[TF_IND_MAX_MASTERS];
    size_t nmasters;
    tf_ind_net_t *net;
    AppIndicator *indicator;
    GtkWidget *menu;
    const char *icon_dir;
    tf_ind_level_t level;
    bool level_set;
    bool status_notifier;
    bool notify_ready;
    tf_ind_item_t *items; /* what the menu shows now */
    size_t nitems;
    sent_note_t notes[NOTES_KEPT]; /* ring */
    size_t nnotes_total;
    char opened[OPENED_KEPT][TF_IND_URL_MAX + 96]; /* ring */
    size_t nopened_total;
    guint net_watch;
    int exit_status;
} app_t;

/* ---- opening pages ---- */

static void remember_opened(app_t *a, const char *url)
{
    snprintf(a->opened[a->nopened_total % OPENED_KEPT],
             sizeof(a->opened[0]), "%s", url);
    a->nopened_total++;
}

static void open_url(app_t *a, const char *url)
{
    GError *err = NULL;
    tf_info("ui", "opening %s", url);
    remember_opened(a, url);
    if (a->conf.browser) {
        gchar **argv = NULL;
        gint argc = 0;
        if (!g_shell_parse_argv(a->conf.browser, &argc, &argv, &err)) {
            tf_error("ui", "browser command \"%s\": %s", a->conf.browser,
                     err->message);
            g_error_free(err);
            return;
        }
        gchar **full = g_new0(gchar *, (gsize)argc + 2);
        for (gint i = 0; i < argc; i++)
            full[i] = argv[i];
        full[argc] = (gchar *)url;
        if (!g_spawn_async(NULL, full, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                           NULL, &err)) {
            tf_error("ui", "cannot run %s: %s", argv[0], err->message);
            g_error_free(err);
        }
        g_free(full);
        g_strfreev(argv);
        return;
    }
    if (!g_app_info_launch_default_for_uri(url, NULL, &err)) {
        tf_error("ui", "cannot open %s: %s (set a browser with --browser)",
                 url, err->message);
        g_error_free(err);
    }
}

static void item_activate_cb(GtkMenuItem *item, gpointer data)
{
    const char *url = g_object_get_data(G_OBJECT(item), "tf-url");
    if (url)
        open_url(data, url);
}

static void quit_cb(GtkMenuItem *item, gpointer data)
{
    app_t *a = data;
    tf_info("ui", "Quit chosen");
    a->exit_status = 0;
    gtk_main_quit();
}

/* ---- the menu ---- */

static void menu_rebuild(app_t *a, const tf_ind_item_t *items, size_t n)
{
    GList *children = gtk_container_get_children(GTK_CONTAINER(a->menu));
    for (GList *c = children; c; c = c->next)
        gtk_widget_destroy(GTK_WIDGET(c->data));
    g_list_free(children);

    for (size_t i = 0; i < n; i++) {
        GtkWidget *w;
        switch (items[i].kind) {
        case TF_IND_ITEM_SEPARATOR:
            w = gtk_separator_menu_item_new();
            break;
        case TF_IND_ITEM_HEADER:
            w = gtk_menu_item_new_with_label(items[i].label);
            gtk_widget_set_sensitive(w, FALSE);
            break;
        case TF_IND_ITEM_LINK:
            w = gtk_menu_item_new_with_label(items[i].label);
            g_object_set_data_full(G_OBJECT(w), "tf-url",
                                   g_strdup(items[i].url), g_free);
            g_signal_connect(w, "activate", G_CALLBACK(item_activate_cb), a);
            break;
        case TF_IND_ITEM_QUIT:
        default:
            w = gtk_menu_item_new_with_label(items[i].label);
            g_signal_connect(w, "activate", G_CALLBACK(quit_cb), a);
            break;
        }
        gtk_menu_shell_append(GTK_MENU_SHELL(a->menu), w);
    }
    gtk_widget_show_all(a->menu);
}

/* ---- notifications ---- */

static void send_note(app_t *a, const tf_ind_note_t *note)
{
    sent_note_t *s = &a->notes[a->nnotes_total % NOTES_KEPT];
    GError *err = NULL;

    memset(s, 0, sizeof(*s));
    s->note = *note;
    a->nnotes_total++;
    tf_info("ui", "notification: %s (%s)", note->summary, note->body);
    if (!a->conf.notify) {
        snprintf(s->error, sizeof(s->error), "notifications are off");
        return;
    }
    if (!a->notify_ready) {
        snprintf(s->error, sizeof(s->error), "libnotify could not start");
        return;
    }
    char *icon = g_build_filename(a->icon_dir,
                                  note->failing ? "testfarm-failing.png"
                                                : "testfarm-passing.png",
                                  NULL);
    NotifyNotification *n = notify_notification_new(note->summary, note->body,
                                                     icon);
    g_free(icon);
    notify_notification_set_urgency(n, note->failing ? NOTIFY_URGENCY_CRITICAL
                                                     : NOTIFY_URGENCY_NORMAL);
    notify_notification_set_category(n, note->failing ? "testfarm.failing"
                                                      : "testfarm.passing");
    notify_notification_set_hint_string(n, "desktop-entry", "tf-indicator");
    if (notify_notification_show(n, &err)) {
        s->shown = true;
    } else {
        snprintf(s->error, sizeof(s->error), "%s", err->message);
        tf_warn("ui", "cannot show a notification: %s (is a notification "
                      "daemon running?)",
                err->message);
        g_error_free(err);
    }
    g_object_unref(n);
}

/* ---- the dump (--dump-state) ---- */

static json_t *dump_menu(app_t *a)
{
    /* Read back from the widgets, so the dump shows what a user sees. */
    json_t *arr = json_array();
    GList *children = gtk_container_get_children(GTK_CONTAINER(a->menu));
    for (GList *c = children; c; c = c->next) {
        GtkWidget *w = c->data;
        if (GTK_IS_SEPARATOR_MENU_ITEM(w)) {
            json_array_append_new(arr, json_pack("{s:b}", "separator", 1));
            continue;
        }
        const char *label = gtk_menu_item_get_label(GTK_MENU_ITEM(w));
        const char *url = g_object_get_data(G_OBJECT(w), "tf-url");
        json_array_append_new(
            arr, json_pack("{s:s,s:o,s:b}", "label", label ? label : "",
                           "url", url ? json_string(url) : json_null(),
                           "sensitive", gtk_widget_get_sensitive(w)));
    }
    g_list_free(children);
    return arr;
}

static json_t *dump_master(const tf_ind_master_t *m)
{
    json_t *bs = json_array();
    for (size_t i = 0; i < m->nbuilders; i++) {
        const tf_ind_builder_t *b = &m->builders[i];
        json_array_append_new(
            bs, json_pack("{s:s,s:I,s:s,s:I,s:b}", "name", b->name,
                          "last_number", (json_int_t)b->last_number,
                          "last_result", b->last_result, "running",
                          (json_int_t)b->nrunning, "failing",
                          tf_ind_builder_failing(b)));
    }
    return json_pack("{s:s,s:s,s:s,s:s,s:o,s:o}", "url", m->base, "label",
                     tf_ind_master_label(m), "link",
                     tf_ind_link_name(m->link), "level",
                     tf_ind_level_name(tf_ind_master_level(m)), "error",
                     m->error[0] ? json_string(m->error) : json_null(),
                     "builders", bs);
}

static void dump_write(app_t *a, const char *title)
{
    if (!a->conf.dump_path)
        return;
    json_t *masters = json_array();
    for (size_t i = 0; i < a->nmasters; i++)
        json_array_append_new(masters, dump_master(&a->masters[i]));
    json_t *notes = json_array();
    size_t first = a->nnotes_total > NOTES_KEPT ? a->nnotes_total - NOTES_KEPT
                                                : 0;
    for (size_t i = first; i < a->nnotes_total; i++) {
        const sent_note_t *s = &a->notes[i % NOTES_KEPT];
        json_array_append_new(
            notes, json_pack("{s:s,s:s,s:s,s:b,s:b,s:o}", "summary",
                             s->note.summary, "body", s->note.body, "url",
                             s->note.url, "failing", s->note.failing, "shown",
                             s->shown, "error",
                             s->error[0] ? json_string(s->error)
                                         : json_null()));
    }
    json_t *opened = json_array();
    first = a->nopened_total > OPENED_KEPT ? a->nopened_total - OPENED_KEPT
                                           : 0;
    for (size_t i = first; i < a->nopened_total; i++)
        json_array_append_new(opened,
                              json_string(a->opened[i % OPENED_KEPT]));
    json_t *root = json_pack(
        "{s:s,s:s,s:s,s:b,s:I,s:o,s:o,s:o,s:o}", "overall",
        tf_ind_level_name(a->level), "icon", tf_ind_level_icon(a->level),
        "title", title, "status_notifier", a->status_notifier, "pid",
        (json_int_t)getpid(), "masters", masters, "menu", dump_menu(a),
        "notifications", notes, "opened", opened);
    char *text = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
    if (!text) {
        tf_error("ui", "cannot render the state dump (out of memory)");
    } else {
        int rc = tf_write_file_atomic(a->conf.dump_path, text, strlen(text),
                                      0644);
        if (rc < 0)
            tf_error("ui", "cannot write %s: %s", a->conf.dump_path,
                     rc > -4096 ? strerror(-rc) : tf_strerror(rc));
    }
    free(text);
    json_decref(root);
}

/* ---- refresh: model -> icon, menu, notifications, dump ---- */

static void refresh(app_t *a)
{
    char title[1024];
    tf_ind_level_t level = tf_ind_overall(a->masters, a->nmasters);
    tf_ind_title(a->masters, a->nmasters, title, sizeof(title));

    if (!a->level_set || level != a->level) {
        tf_info("ui", "tray: %s", tf_ind_level_name(level));
        app_indicator_set_icon_full(a->indicator, tf_ind_level_icon(level),
                                    title);
        a->level = level;
        a->level_set = true;
    }
    app_indicator_set_title(a->indicator, title);

    for (size_t i = 0; i < a->nmasters; i++) {
        tf_ind_note_t notes[16];
        size_t n;
        while ((n = tf_ind_master_notes(&a->masters[i], notes, 16)) > 0) {
            for (size_t k = 0; k < n; k++)
                send_note(a, &notes[k]);
        }
    }

    tf_ind_item_t *items = calloc(MENU_MAX, sizeof(*items));
    if (items) {
        size_t n = tf_ind_menu_build(a->masters, a->nmasters, items, MENU_MAX);
        if (n != a->nitems || !a->items ||
            memcmp(items, a->items, n * sizeof(*items)) != 0) {
            menu_rebuild(a, items, n);
            free(a->items);
            a->items = items;
            a->nitems = n;
            items = NULL;
        }
        free(items);
    }
    dump_write(a, title);
}

/* ---- messages from the links ---- */

static gboolean net_cb(gint fd, GIOCondition cond, gpointer data)
{
    app_t *a = data;
    tf_ind_net_msg_t *list = tf_ind_net_take(a->net);
    char err[300];

    for (tf_ind_net_msg_t *m = list; m; m = m->next) {
        tf_ind_master_t *ms = &a->masters[m->master];
        int rc;
        switch (m->kind) {
        case TF_IND_NET_UP:
            tf_ind_master_link_up(ms);
            break;
        case TF_IND_NET_EVENT:
            rc = tf_ind_master_apply_event(ms, m->text, m->len);
            if (rc == TF_EFULL || rc == TF_ENOMEM)
                tf_ind_net_restart(a->net, m->master, true,
                                   "too many events while syncing");
            else if (rc < 0)
                tf_warn("ui", "%s: a malformed build event: ignored",
                        ms->base);
            break;
        case TF_IND_NET_SNAPSHOT:
            err[0] = '\0';
            rc = tf_ind_master_apply_snapshot(ms, m->text, m->len, m->text2,
                                              m->len2, err, sizeof(err));
            if (rc < 0) {
                tf_warn("ui", "%s: %s", ms->base, err);
                tf_ind_master_link_down(ms, err);
                tf_ind_net_restart(a->net, m->master, false, err);
            }
            break;
        case TF_IND_NET_DOWN:
            tf_ind_master_link_down(ms, m->error);
            break;
        }
    }
    tf_ind_net_msg_free(list);
    refresh(a);
    return G_SOURCE_CONTINUE;
}

static void connection_changed_cb(AppIndicator *ind, gboolean connected,
                                  gpointer data)
{
    app_t *a = data;
    a->status_notifier = connected;
    tf_info("ui", "%s", connected ? "StatusNotifier host found: the icon is "
                                    "shown through it"
                                  : "no StatusNotifier host: the icon is a "
                                    "GtkStatusIcon (XEmbed tray)");
    refresh(a);
}

static gboolean signal_cb(gpointer data)
{
    app_t *a = data;
    tf_info("ui", "signal received: quitting");
    a->exit_status = 0;
    gtk_main_quit();
    return G_SOURCE_REMOVE;
}

/* ---- main ---- */

static bool icons_present(const char *dir)
{
    char *p = g_build_filename(dir, "testfarm-unknown.png", NULL);
    bool ok = access(p, R_OK) == 0;
    g_free(p);
    return ok;
}

int main(int argc, char **argv)
{
    static app_t app; /* large: not on the stack */
    app_t *a = &app;
    char err[TF_IND_ERR_MAX];
    tf_ind_args_action_t action;
    tf_log_level_t level = TF_LOG_INFO;
    int rc;

    tf_log_init("tf-indicator", TF_LOG_INFO, NULL);
    tf_ind_conf_init(&a->conf);
    err[0] = '\0';
    rc = tf_ind_args_parse(&a->conf, argc, argv, getenv("XDG_CONFIG_HOME"),
                           getenv("HOME"), &action, err, sizeof(err));
    if (rc < 0) {
        fprintf(stderr, "tf-indicator: %s\n", err);
        tf_ind_conf_free(&a->conf);
        return 2;
    }
    if (action == TF_IND_ARGS_HELP || action == TF_IND_ARGS_VERSION ||
        action == TF_IND_ARGS_IDLE) {
        if (action == TF_IND_ARGS_HELP)
            fputs(tf_ind_usage(), stdout);
        else if (action == TF_IND_ARGS_VERSION)
            printf("tf-indicator %s\n", TF_VERSION);
        else
            fprintf(stderr, "tf-indicator: %s\n", err);
        tf_ind_conf_free(&a->conf);
        return 0;
    }
    if (a->conf.log_level)
        (void)tf_log_parse_level(a->conf.log_level, &level);
    tf_log_init("tf-indicator", level, NULL);

    if (!gtk_init_check(NULL, NULL)) {
        fprintf(stderr, "tf-indicator: cannot open the display (is DISPLAY "
                        "or WAYLAND_DISPLAY set?)\n");
        tf_ind_conf_free(&a->conf);
        return 1;
    }
    a->icon_dir = a->conf.icon_dir ? a->conf.icon_dir : TF_IND_ICON_DIR;
    if (!icons_present(a->icon_dir))
        tf_warn("ui", "no icons in %s (testfarm-unknown.png missing): the "
                      "tray shows a placeholder; see --icon-dir",
                a->icon_dir);
    a->nmasters = a->conf.nmasters;
    for (size_t i = 0; i < a->nmasters; i++)
        tf_ind_master_init(&a->masters[i], a->conf.masters[i].url.base,
                           a->conf.masters[i].label);
    if (a->conf.notify) {
        a->notify_ready = notify_init("tf-indicator");
        if (!a->notify_ready)
            tf_warn("ui", "libnotify could not start: no notifications");
    }

    /* libayatana-appindicator3 0.5.92 (Debian 12) adds the icon theme
     * path to GTK's default icon theme when it falls back to a
     * GtkStatusIcon, and looks for it first with a loop that reads past
     * the end of the search path array when the path is not there yet
     * (seen crashing under ASan, now and then). With the path already
     * in the search path the loop stops at it: add it first. */
    gtk_icon_theme_append_search_path(gtk_icon_theme_get_default(),
                                      a->icon_dir);
    a->indicator = app_indicator_new_with_path(
        "testfarm-indicator", "testfarm-unknown",
        APP_INDICATOR_CATEGORY_APPLICATION_STATUS, a->icon_dir);
    app_indicator_set_icon_theme_path(a->indicator, a->icon_dir);
    g_signal_connect(a->indicator, "connection-changed",
                     G_CALLBACK(connection_changed_cb), a);
    a->menu = gtk_menu_new();
    g_object_ref_sink(a->menu);
    app_indicator_set_menu(a->indicator, GTK_MENU(a->menu));
    app_indicator_set_status(a->indicator, APP_INDICATOR_STATUS_ACTIVE);

    rc = tf_ind_net_start(&a->conf, &a->net);
    if (rc < 0) {
        fprintf(stderr, "tf-indicator: cannot start the network links: %s\n",
                tf_strerror(rc));
        a->exit_status = 1;
        goto out;
    }
    a->net_watch = g_unix_fd_add(tf_ind_net_fd(a->net), G_IO_IN, net_cb, a);
    g_unix_signal_add(SIGTERM, signal_cb, a);
    g_unix_signal_add(SIGINT, signal_cb, a);
    for (size_t i = 0; i < a->nmasters; i++)
        tf_info("ui", "watching %s", a->masters[i].base);
    refresh(a);
    gtk_main();
    tf_info("ui", "exiting");

out:
    if (a->net_watch)
        g_source_remove(a->net_watch);
    tf_ind_net_stop(a->net);
    if (a->indicator) {
        /* Disposing of an indicator that reached a StatusNotifier host
         * emits "connection-changed" once more: our handler must not run
         * (it would refresh from what is freed below). */
        g_signal_handlers_disconnect_by_data(a->indicator, a);
        g_object_unref(a->indicator);
    }
    if (a->menu) {
        gtk_widget_destroy(a->menu);
        g_object_unref(a->menu);
    }
    for (size_t i = 0; i < a->nmasters; i++)
        tf_ind_master_free(&a->masters[i]);
    free(a->items);
    if (a->notify_ready)
        notify_uninit();
    tf_ind_conf_free(&a->conf);
    return a->exit_status;
}

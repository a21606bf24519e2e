/* anonymize_video.c - the smallest complete use of libstyleid_edge from C: read a video, anonymize
 * every face of every frame with the latent method, write the result.
 *
 *   anonymize_video PACK_DIR INPUT OUTPUT
 *
 * INPUT is a file, an RTSP URL or a camera index; OUTPUT a .mp4 / .avi / .mkv file. Faces the
 * method cannot handle are pixelated (fail closed); the totals are printed at the end.
 */
#include <stdio.h>
#include <stdlib.h>

#include "styleid_edge.h"

static int report(const char *what) {
    fprintf(stderr, "anonymize_video: %s: %s\n", what, styleid_edge_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s PACK_DIR INPUT OUTPUT\n", argv[0]);
        return 2;
    }
    styleid_edge_options options;
    styleid_edge_options_init(&options);

    styleid_edge *runtime = NULL;
    if (styleid_edge_create(argv[1], &options, &runtime) != STYLEID_EDGE_OK) return report("loading the pack");

    styleid_edge_reader *reader = NULL;
    int width = 0, height = 0;
    double fps = 0;
    if (styleid_edge_reader_open(argv[2], &reader, &width, &height, &fps) != STYLEID_EDGE_OK) {
        styleid_edge_destroy(runtime);
        return report("opening the input");
    }
    styleid_edge_writer *writer = NULL;
    if (styleid_edge_writer_open(argv[3], width, height, fps, &writer) != STYLEID_EDGE_OK) {
        styleid_edge_reader_close(reader);
        styleid_edge_destroy(runtime);
        return report("creating the output");
    }
    styleid_edge_reset(runtime, (float)fps);

    uint8_t *frame = malloc((size_t)width * height * 3);
    styleid_edge_face faces[64];
    long frames = 0, regenerated = 0, pixelated = 0, unlisted = 0;
    int got = 0, status = 0;
    while (frame) {
        if (styleid_edge_reader_read(reader, frame, 0, &got) != STYLEID_EDGE_OK) { status = report("reading"); break; }
        if (!got) break;
        if (styleid_edge_anonymize(runtime, frame, width, height, 0) != STYLEID_EDGE_OK) {
            status = report("anonymizing");  /* never write a frame that may still show a face */
            break;
        }
        size_t count = 0;
        styleid_edge_get_faces(runtime, faces, 64, &count);  /* ERR_BUFFER past 64 faces: only 64 are copied */
        for (size_t i = 0; i < count && i < 64; ++i) {
            if (faces[i].method == STYLEID_EDGE_METHOD_LATENT) ++regenerated;
            else ++pixelated;
        }
        if (count > 64) unlisted += (long)(count - 64);  /* anonymized too; their records were not copied */
        if (styleid_edge_writer_write(writer, frame, 0) != STYLEID_EDGE_OK) { status = report("writing"); break; }
        ++frames;
    }
    if (!frame) {
        fprintf(stderr, "anonymize_video: out of memory for a %dx%d frame\n", width, height);
        status = 1;
    }
    if (styleid_edge_writer_close(writer) != STYLEID_EDGE_OK && !status) status = report("finishing the output");
    styleid_edge_reader_close(reader);
    styleid_edge_destroy(runtime);
    free(frame);
    printf("%ld frames, %ld faces regenerated, %ld pixelated", frames, regenerated, pixelated);
    if (unlisted) printf(", %ld more past 64 in a frame", unlisted);
    printf(" -> %s\n", argv[3]);
    return status;
}

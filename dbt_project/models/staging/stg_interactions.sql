with

source as (
    select * from {{ source('warehouse', 'validated_interactions') }}
),

renamed as (
    select
        user_id,
        item_id,
        event_type,
        rating,
        event_time,
        cast(event_time as date) as event_date,
        transaction_id,
        source_file,
        source_row
    from source
)

select * from renamed
